//! The first rows in one column's order, read from the row groups that can hold them.
//!
//! An Insights query that only picks fields, orders by a stored numeric column and keeps
//! the first `k` rows (`fields requestId, output.outputTokenCount | sort
//! output.outputTokenCount desc | limit 10`, or any query that leaves Insights' default
//! order, newest first) needs only the rows whose value is at least the `k`-th greatest.
//! Each row group's zone map ([`logbook_store::zonemap`]) says, without reading a row, that
//! its greatest value is held by one row and its least by all its non-null rows; from the
//! zone maps of the row groups wholly inside the query's time range, [`bound`] finds a
//! value `t` that at least `k` rows reach. Only row groups that reach `t` are read
//! ([`Bound::keeps`]); DataFusion's sort still orders what is read, so the answer is the
//! one a whole scan gives (rows tied with the `k`-th are all read, as before).
//!
//! What is never narrowed: a query with `filter`, `stats`, `parse`, `dedup` or `unnest`
//! (rows the bound counted may not survive them), a field a `fields` or `display` defines
//! anew, a column that is not a stored integer, timestamp or decimal, files without exact
//! statistics, other replicas' files and the unflushed tail (always read whole).

use crate::insights::ast::{self, Command};
use logbook_store::schema::{self, Kind};
use logbook_store::zonemap::{Range, Zone};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The order a query keeps the first rows of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    /// The column's index in [`schema::COLUMNS`].
    pub column: usize,
    /// Greatest first (nulls last either way, as Insights orders them).
    pub desc: bool,
    /// Rows kept.
    pub k: usize,
    /// The order has one key: rows tied on it may be any of them.
    pub single: bool,
}

/// The name Insights gives a stored column.
fn insights_name(c: &schema::Column) -> &'static str {
    if c.name == "timestamp" {
        "@timestamp"
    } else {
        c.path
    }
}

/// The stored numeric column an Insights field name resolves to, as the compiler resolves
/// it: the column's own name, `timestamp` or `@ingestionTime` for `@timestamp`, or an
/// unqualified name that ends exactly one column's path. None when a projection of the
/// query may take the name instead (a `fields ... as` of that name, or of a path it ends).
fn numeric_column(field: &str, projections: &[&ast::Proj]) -> Option<usize> {
    let taken = projections.iter().any(|p| {
        let n = p.name();
        (n == field && p.expr != ast::Expr::Field(field.to_string()))
            || n.ends_with(&format!(".{field}"))
    });
    if taken {
        return None;
    }
    let field = match field {
        "timestamp" | "@ingestionTime" => "@timestamp",
        f => f,
    };
    let exact = schema::COLUMNS
        .iter()
        .position(|c| insights_name(c) == field);
    let i = match exact {
        Some(i) => i,
        None if !field.contains('.') && !field.starts_with('@') => {
            let suffix = format!(".{field}");
            let mut ends = schema::COLUMNS
                .iter()
                .enumerate()
                .filter(|(_, c)| insights_name(c).ends_with(&suffix));
            match (ends.next(), ends.next()) {
                (Some((i, _)), None) => i,
                _ => return None,
            }
        }
        None => return None,
    };
    matches!(
        schema::COLUMNS[i].kind,
        Kind::Int | Kind::Timestamp | Kind::Decimal
    )
    .then_some(i)
}

/// The order whose first `k` rows `query` answers with, when it answers with nothing else:
/// only `fields`/`display` (none redefining the ordered field), then at most one `sort`
/// and one `limit`, in that order. `cap` is the API's limit on rows.
pub fn order_of(query: &ast::Query, cap: usize) -> Option<Order> {
    let mut sort: Option<(String, bool, bool)> = None;
    let mut limit: Option<u64> = None;
    let mut projections: Vec<&ast::Proj> = Vec::new();
    for cmd in &query.commands {
        if limit.is_some() {
            // A limit applies where it stands: anything after it sees only its rows.
            return None;
        }
        match cmd {
            Command::Fields(p) | Command::Display(p) => projections.extend(p),
            Command::Sort(keys) if sort.is_none() => {
                let (first, desc) = keys.first()?;
                let ast::Expr::Field(f) = first else {
                    return None;
                };
                sort = Some((f.clone(), *desc, keys.len() == 1));
            }
            Command::Limit(n) => limit = Some(*n),
            _ => return None,
        }
    }
    // No sort: Insights' default order, newest first.
    let (field, desc, single) = sort.unwrap_or_else(|| ("@timestamp".into(), true, true));
    let column = numeric_column(&field, &projections)?;
    let k = limit.map_or(cap, |l| usize::try_from(l).unwrap_or(usize::MAX).min(cap));
    (k > 0).then_some(Order {
        column,
        desc,
        k,
        single,
    })
}

/// What a scan keeps of each file for an [`Order`]: the row groups that reach `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The column's index in [`schema::COLUMNS`].
    pub column: usize,
    /// Greatest first.
    pub desc: bool,
    /// At least `k` rows reach it (for a timestamp, epoch ms; a decimal, unscaled).
    pub value: i128,
    /// When the order has one key (rows tied on it may be any of them): of the row groups
    /// whose extreme is `value` itself, the ones read (file, row group), enough with the
    /// row groups beyond it for `k` rows. None: all of them are read.
    pub ties: Option<Arc<HashSet<(PathBuf, usize)>>>,
    /// The rows read of each file (start, rows; in order), when the ordered column of the
    /// row groups kept was read first ([`pick`]); a file not named here is read by its
    /// row groups.
    pub rows: Option<Arc<RowsOf>>,
}

/// Rows of each file, by the scan's name for it: (start, rows) ranges, in order.
pub type RowsOf = HashMap<PathBuf, Vec<(u64, u64)>>;

impl Bound {
    /// Does a value reach the bound (is it at it, or beyond it in the order)?
    pub fn reaches(&self, value: i128) -> bool {
        if self.desc {
            value >= self.value
        } else {
            value <= self.value
        }
    }

    /// Can row group `index` of `file`, with this zone, hold one of the first rows? Yes
    /// when its values go beyond the bound, or reach it and it is among the tied row
    /// groups read; no when they fall short (its nulls come after the `k` values that
    /// reach it). A zone without a range for the column (no statistics, all null) is read.
    pub fn keeps(&self, file: &Path, index: usize, zone: &Zone) -> bool {
        let Some(Some(r)) = zone.ranges.get(self.column) else {
            return true;
        };
        let (extreme, beyond) = if self.desc {
            (r.max, r.max > self.value)
        } else {
            (r.min, r.min < self.value)
        };
        if beyond {
            return true;
        }
        if extreme != self.value {
            return false;
        }
        match &self.ties {
            None => true,
            Some(read) => read.contains(&(file.to_path_buf(), index)),
        }
    }
}

/// A row group's zone, where it is, and the time range `[lo, hi]` (epoch ms) its log
/// group's rows are answered in.
#[derive(Debug, Clone, Copy)]
pub struct ZoneAt<'a> {
    /// The store file.
    pub file: &'a Path,
    /// The row group's index in the file.
    pub index: usize,
    /// Its zone.
    pub zone: &'a Zone,
    /// Earliest time answered.
    pub lo: i64,
    /// Latest time answered.
    pub hi: i64,
}

impl ZoneAt<'_> {
    /// The zone's range of the ordered column, if the zone is wholly inside its time
    /// range (rows outside it are not answered, so they vouch for nothing) and has
    /// non-null values; with their number.
    fn vouching(&self, order: &Order, ts: usize) -> Option<(Range, u64)> {
        let inside = matches!(self.zone.ranges.get(ts), Some(Some(t))
            if t.min >= i128::from(self.lo) && t.max <= i128::from(self.hi));
        let Some(Some(r)) = self.zone.ranges.get(order.column) else {
            return None;
        };
        let values = self.zone.rows.saturating_sub(r.nulls);
        (inside && values > 0).then_some((*r, values))
    }
}

/// A value at least `order.k` rows reach, from the zones of row groups: a zone vouches
/// for one row at its extreme value, and for all its non-null rows at the other end. None
/// when the zones do not vouch for `k` rows (the scan then reads everything).
pub fn bound(order: &Order, zones: &[ZoneAt<'_>]) -> Option<Bound> {
    let ts = schema::COLUMNS
        .iter()
        .position(|c| c.kind == Kind::Timestamp)?;
    // Greatest first: walk values downward (negated for least first).
    let walk = |r: &Range| {
        if order.desc {
            (r.max, r.min)
        } else {
            (-r.min, -r.max)
        }
    };
    let mut events: Vec<(i128, u64)> = Vec::new();
    for z in zones {
        if let Some((r, values)) = z.vouching(order, ts) {
            let (first, last) = walk(&r);
            events.push((first, 1));
            events.push((last, values - 1));
        }
    }
    events.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
    let mut reached = 0u64;
    let mut i = 0;
    let mut at = None;
    while i < events.len() {
        let v = events[i].0;
        while i < events.len() && events[i].0 == v {
            reached = reached.saturating_add(events[i].1);
            i += 1;
        }
        if reached >= order.k as u64 {
            at = Some(v);
            break;
        }
    }
    let at = at?;
    let value = if order.desc { at } else { -at };
    let ties = order.single.then(|| {
        // The rows the zones beyond the bound vouch for at it; then tied zones, in the
        // order given, until `k`.
        let vouched = |r: &Range, values: u64| {
            let (_, last) = walk(r);
            if last >= at {
                values
            } else {
                1
            }
        };
        let mut have: u64 = zones
            .iter()
            .filter_map(|z| z.vouching(order, ts))
            .filter(|(r, _)| walk(r).0 > at)
            .map(|(r, values)| vouched(&r, values))
            .sum();
        let mut read = HashSet::new();
        for z in zones {
            if have >= order.k as u64 {
                break;
            }
            if let Some((r, values)) = z.vouching(order, ts) {
                if walk(&r).0 == at {
                    read.insert((z.file.to_path_buf(), z.index));
                    have = have.saturating_add(vouched(&r, values));
                }
            }
        }
        Arc::new(read)
    });
    Some(Bound {
        column: order.column,
        desc: order.desc,
        value,
        ties,
        rows: None,
    })
}

/// A row of a store file, with its value of the ordered column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The file (an index the caller keeps).
    pub file: usize,
    /// The row's position in the file.
    pub row: u64,
    /// Its value.
    pub value: i128,
}

/// Of `candidates` (every non-null row, in the query's range, of the row groups a
/// [`Bound`] keeps), the rows the first `order.k` rows are among: those beyond the `k`-th
/// value, and of the rows tied at it, with one key as many as make `k` (the first given),
/// with more keys all of them (the next keys order them).
pub fn pick(order: &Order, candidates: Vec<Candidate>) -> Vec<Candidate> {
    if candidates.len() <= order.k {
        return candidates;
    }
    let key = |c: &Candidate| if order.desc { -c.value } else { c.value };
    // The k-th key without sorting them all.
    let mut keys: Vec<i128> = candidates.iter().map(key).collect();
    let (_, kth, _) = keys.select_nth_unstable(order.k - 1);
    let kth = *kth;
    let before = candidates.iter().filter(|c| key(c) < kth).count();
    let mut tied = if order.single {
        order.k - before
    } else {
        usize::MAX
    };
    candidates
        .into_iter()
        .filter(|c| match key(c).cmp(&kth) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Equal if tied > 0 => {
                tied -= 1;
                true
            }
            _ => false,
        })
        .collect()
}

/// Row positions (in any order) as ranges (start, rows; in order).
pub fn ranges(mut rows: Vec<u64>) -> Vec<(u64, u64)> {
    rows.sort_unstable();
    rows.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for r in rows {
        match out.last_mut() {
            Some(last) if last.0 + last.1 == r => last.1 += 1,
            _ => out.push((r, 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insights::parse;
    use logbook_store::zonemap::Range;

    fn col(name: &str) -> usize {
        schema::COLUMNS
            .iter()
            .position(|c| c.name == name)
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn only_picking_ordering_and_limiting_has_an_order() {
        let out = col("output_token_count");
        let ts = col("timestamp");
        let q = |s: &str| parse(s).map(|q| order_of(&q, 1000)).ok().flatten();
        let o = |column, desc, k| {
            Some(Order {
                column,
                desc,
                k,
                single: true,
            })
        };
        assert_eq!(
            q("fields requestId, output.outputTokenCount | sort output.outputTokenCount desc | limit 10"),
            o(out, true, 10)
        );
        assert_eq!(q("sort output.outputTokenCount asc"), o(out, false, 1000));
        assert_eq!(q("fields @timestamp, @message | limit 20"), o(ts, true, 20));
        assert_eq!(q("fields @timestamp, @message"), o(ts, true, 1000));
        assert_eq!(q("limit 5000"), o(ts, true, 1000));
        assert_eq!(
            q("sort @timestamp asc, output.outputTokenCount desc | display requestId | limit 3"),
            Some(Order {
                column: ts,
                desc: false,
                k: 3,
                single: false
            })
        );
        assert_eq!(
            q("sort logbook.cost desc | limit 10"),
            o(col("cost"), true, 10)
        );
        // Rows the bound counts might not survive these, or the order is not a column's.
        for s in [
            "filter modelId = 'x' | sort output.outputTokenCount desc | limit 10",
            "sort output.outputTokenCount desc | limit 10 | filter modelId = 'x'",
            "stats count(*) by modelId | limit 10",
            "parse @message 'a*b' as x | limit 10",
            "dedup modelId | limit 10",
            "sort requestId desc | limit 10",
            "sort output.outputTokenCount + 1 desc | limit 10",
            "sort input.inputBodyJson.max_tokens desc | limit 10",
            "fields input.inputTokenCount as output.outputTokenCount | sort output.outputTokenCount desc | limit 3",
            "sort output.outputTokenCount desc | fields 1 as output.outputTokenCount | limit 3",
            "fields input.inputTokenCount as outputTokenCount | sort outputTokenCount desc | limit 3",
            "fields input.inputTokenCount as x.outputTokenCount | sort outputTokenCount desc | limit 3",
            "fields 1 as timestamp | sort timestamp desc | limit 3",
            "sort TokenCount desc | limit 3",
            "limit 10 | sort output.outputTokenCount desc",
            "limit 10 | fields requestId",
            "sort output.outputTokenCount desc | limit 0",
        ] {
            assert_eq!(q(s), None, "{s}");
        }
        // Picking the field itself is not redefining it.
        assert_eq!(
            q("fields output.outputTokenCount | sort output.outputTokenCount desc | limit 2"),
            o(out, true, 2)
        );
    }

    fn zone(rows: u64, ts: (i128, i128), v: Option<(i128, i128, u64)>) -> Zone {
        let mut ranges = vec![None; schema::COLUMNS.len()];
        ranges[col("timestamp")] = Some(Range {
            min: ts.0,
            max: ts.1,
            nulls: 0,
        });
        ranges[col("output_token_count")] = v.map(|(min, max, nulls)| Range { min, max, nulls });
        Zone { rows, ranges }
    }

    fn at<'a>(zones: &'a [Zone], lo: i64, hi: i64) -> Vec<ZoneAt<'a>> {
        zones
            .iter()
            .enumerate()
            .map(|(index, zone)| ZoneAt {
                file: Path::new("/f"),
                index,
                zone,
                lo,
                hi,
            })
            .collect()
    }

    fn order(desc: bool, k: usize, single: bool) -> Order {
        Order {
            column: col("output_token_count"),
            desc,
            k,
            single,
        }
    }

    #[test]
    fn the_bound_is_a_value_k_rows_reach() {
        let zones = [
            zone(100, (0, 10), Some((5, 900, 0))),
            zone(100, (0, 10), Some((50, 700, 0))),
            zone(100, (0, 10), Some((1, 800, 0))),
            zone(100, (0, 10), Some((0, 60, 0))),
        ];
        let b =
            |desc, k, lo, hi| bound(&order(desc, k, false), &at(&zones, lo, hi)).map(|b| b.value);
        // Greatest first: one row at each maximum, then all of a zone at its minimum.
        assert_eq!(b(true, 1, 0, 10), Some(900));
        assert_eq!(b(true, 3, 0, 10), Some(700));
        assert_eq!(b(true, 4, 0, 10), Some(60));
        assert_eq!(b(true, 5, 0, 10), Some(50));
        assert_eq!(b(true, 103, 0, 10), Some(50));
        assert_eq!(b(true, 104, 0, 10), Some(5));
        assert_eq!(b(true, 400, 0, 10), Some(0));
        assert_eq!(b(true, 401, 0, 10), None);
        // Least first, the mirror.
        assert_eq!(b(false, 1, 0, 10), Some(0));
        assert_eq!(b(false, 4, 0, 10), Some(50));
        assert_eq!(b(false, 5, 0, 10), Some(60));
        assert_eq!(b(false, 103, 0, 10), Some(60));
        assert_eq!(b(false, 104, 0, 10), Some(700));
        // Zones not wholly inside the time range vouch for nothing.
        assert_eq!(b(true, 1, 1, 10), None);
        assert_eq!(b(true, 1, 0, 9), None);
        // Nulls are not values; a zone without statistics vouches for nothing.
        let z = [
            zone(10, (0, 1), Some((3, 9, 9))),
            zone(10, (0, 1), None),
            zone(10, (0, 1), Some((4, 4, 0))),
        ];
        let all = |k| bound(&order(true, k, false), &at(&z, 0, 1)).map(|b| b.value);
        assert_eq!(all(2), Some(4));
        assert_eq!(all(12), None);
        // Each zone against its own group's range.
        let mut two = at(&zones[..2], 0, 10);
        two[1].lo = 1;
        assert_eq!(
            bound(&order(true, 2, false), &two).map(|b| b.value),
            Some(5)
        );
    }

    #[test]
    fn row_groups_that_fall_short_are_left_out() {
        let f = Path::new("/f");
        let desc = Bound {
            column: col("output_token_count"),
            desc: true,
            value: 100,
            ties: None,
            rows: None,
        };
        assert!(desc.keeps(f, 0, &zone(5, (0, 1), Some((1, 100, 0)))));
        assert!(!desc.keeps(f, 0, &zone(5, (0, 1), Some((1, 99, 0)))));
        assert!(!desc.keeps(f, 0, &zone(5, (0, 1), Some((1, 99, 1)))));
        assert!(desc.keeps(f, 0, &zone(5, (0, 1), None)));
        let asc = Bound {
            desc: false,
            ..desc.clone()
        };
        assert!(asc.keeps(f, 0, &zone(5, (0, 1), Some((100, 200, 0)))));
        assert!(!asc.keeps(f, 0, &zone(5, (0, 1), Some((101, 200, 3)))));
        assert!(desc.reaches(100) && desc.reaches(101) && !desc.reaches(99));
        assert!(asc.reaches(100) && asc.reaches(99) && !asc.reaches(101));
    }

    #[test]
    fn with_one_key_only_enough_tied_row_groups_are_read() {
        // Capped counts: most row groups reach the same greatest value.
        let zones = [
            zone(100, (0, 10), Some((1, 1001, 0))),
            zone(100, (0, 10), Some((1, 1001, 0))),
            zone(100, (0, 10), Some((1, 1001, 0))),
            zone(100, (0, 10), Some((1, 2000, 0))),
            zone(100, (0, 10), Some((1001, 1001, 0))),
            zone(100, (0, 10), Some((1, 900, 0))),
            zone(100, (5, 20), Some((1, 1001, 0))),
            zone(100, (5, 20), Some((1, 3000, 0))),
        ];
        let zs = at(&zones, 0, 10);
        let read = |b: &Bound| {
            zones
                .iter()
                .enumerate()
                .filter(|(i, z)| b.keeps(Path::new("/f"), *i, z))
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        };
        // Three rows: one beyond (2000), two of the tied at 1001: the first two given.
        let b = bound(&order(true, 3, true), &zs).unwrap();
        assert_eq!(b.value, 1001);
        assert_eq!(read(&b), [0, 1, 3, 7]);
        // With two keys, ties are ordered by the second: every tied row group is read.
        let b = bound(&order(true, 3, false), &zs).unwrap();
        assert_eq!(read(&b), [0, 1, 2, 3, 4, 6, 7]);
        // A row group wholly at the value vouches for all its rows.
        let b = bound(&order(true, 104, true), &zs).unwrap();
        assert_eq!(b.value, 1001);
        assert_eq!(read(&b), [0, 1, 2, 3, 4, 7]);
        // Beyond the value: read whether or not inside the range (7 is cut by it).
        let b = bound(&order(true, 1, true), &zs).unwrap();
        assert_eq!(b.value, 2000);
        assert_eq!(read(&b), [3, 7]);
    }

    #[test]
    fn the_rows_picked_are_those_beyond_the_kth_and_enough_tied() {
        let c = |file, row, value| Candidate { file, row, value };
        let all = vec![
            c(0, 0, 5),
            c(0, 1, 9),
            c(0, 2, 7),
            c(1, 0, 7),
            c(1, 5, 7),
            c(1, 6, 1),
        ];
        assert_eq!(
            pick(&order(true, 3, true), all.clone()),
            [c(0, 1, 9), c(0, 2, 7), c(1, 0, 7)]
        );
        assert_eq!(
            pick(&order(true, 3, false), all.clone()),
            [c(0, 1, 9), c(0, 2, 7), c(1, 0, 7), c(1, 5, 7)]
        );
        assert_eq!(
            pick(&order(false, 2, true), all.clone()),
            [c(0, 0, 5), c(1, 6, 1)]
        );
        assert_eq!(pick(&order(false, 10, true), all.clone()).len(), 6);
        assert_eq!(ranges(vec![7, 1, 2, 3, 9, 8, 3]), [(1, 3), (7, 3)]);
        assert_eq!(ranges(vec![]), []);
    }
}
