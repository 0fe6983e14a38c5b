//! Text searches read only the blocks of rows their text may be in.
//!
//! Each store file carries a text index ([`logbook_store::textindex`]): per block of
//! rows, a Bloom filter of the trigrams of the records' text. [`IndexedFiles`] is the
//! table of a group's store files; when a filter DataFusion pushes into its scan implies
//! "the record's text contains these bytes" (an Insights `like /rare-phrase/` or
//! `like "rare-phrase"`, SQL `LIKE '%...%'`, `ILIKE`, `~`, `~*`, `regexp_like`,
//! `contains`, on a body column or on the rebuilt `message`), each file is read with a
//! row selection of the blocks that may hold them. The filter still runs on every row
//! read: the index narrows what is read, never what is answered.
//!
//! What narrows nothing (and so reads everything, as before): a negated match, a
//! pattern with no three literal bytes in a row, a case-insensitive pattern's non-ASCII
//! letters and `k`/`s` (Unicode folds them with other letters), a column the index does
//! not cover, a body past its retention (the query rewrites it), files written before
//! the index.

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::ScalarValue;
use datafusion::datasource::physical_plan::{FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use logbook_store::textindex::Need;
use logbook_store::Store;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Rows the text index let a query skip (a session extension, read after the query).
#[derive(Debug, Default)]
pub struct Skipped(pub AtomicU64);

/// A group's store files, read through their text indexes, and through their zone maps
/// when the query keeps only the first rows in one column's order ([`crate::topk`]).
pub struct IndexedFiles {
    inner: Arc<dyn TableProvider>,
    store: Arc<Store>,
    bound: Option<crate::topk::Bound>,
}

impl std::fmt::Debug for IndexedFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexedFiles")
            .field("inner", &self.inner)
            .field("bound", &self.bound)
            .finish()
    }
}

impl IndexedFiles {
    /// `inner` reads the files (a listing of local paths); `store` reads their indexes.
    pub fn new(inner: Arc<dyn TableProvider>, store: Arc<Store>) -> IndexedFiles {
        IndexedFiles {
            inner,
            store,
            bound: None,
        }
    }

    /// Read only the row groups that can reach `bound`.
    pub fn with_bound(mut self, bound: Option<crate::topk::Bound>) -> IndexedFiles {
        self.bound = bound;
        self
    }
}

#[async_trait::async_trait]
impl TableProvider for IndexedFiles {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        // Never exact: the filters still run above the scan.
        Ok(self
            .inner
            .supports_filters_pushdown(filters)?
            .into_iter()
            .map(|p| match p {
                TableProviderFilterPushDown::Exact => TableProviderFilterPushDown::Inexact,
                p => p,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.scan(state, projection, filters, limit).await?;
        let needs: Vec<Need> = filters.iter().filter_map(need_of).collect();
        let bound = self.bound.clone();
        if needs.is_empty() && bound.is_none() {
            return Ok(plan);
        }
        let need = match needs.len() {
            0 => None,
            1 => needs.into_iter().next(),
            _ => Some(Need::All(needs)),
        };
        let skipped = state.config().get_extension::<Skipped>();
        let store = self.store.clone();
        let out = plan.transform_up(|node| {
            let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(cfg) = exec.data_source().downcast_ref::<FileScanConfig>() else {
                return Ok(Transformed::no(node));
            };
            let mut cfg = cfg.clone();
            // A file split into byte ranges is listed once per range: count it once.
            let mut counted = std::collections::HashSet::new();
            for group in cfg.file_groups.iter_mut() {
                let files = std::mem::take(group).into_inner();
                let files = files
                    .into_iter()
                    .filter_map(|f| {
                        let path = scanned_path(&f.object_meta.location);
                        let by_text = need.as_ref().and_then(|need| text_ranges(&store, &path, need));
                        let by_order = bound.as_ref().and_then(|b| order_ranges(&store, &path, b));
                        let (ranges, rows) = match (by_text, by_order) {
                            (None, None) => return Some(f),
                            (Some(t), None) => t,
                            (None, Some(o)) => o,
                            (Some((t, rows)), Some((o, o_rows))) if rows == o_rows => {
                                (intersect(&t, &o), rows)
                            }
                            (Some(t), Some(_)) => {
                                tracing::warn!(file = %path.display(), "text index and footer disagree on the rows; the order bound is not used");
                                t
                            }
                        };
                        let kept: u64 = ranges.iter().map(|r| r.1).sum();
                        if counted.insert(path) {
                            if let Some(s) = &skipped {
                                s.0.fetch_add(rows.saturating_sub(kept), Ordering::Relaxed);
                            }
                        }
                        if kept == 0 {
                            // Nothing to read: the file is not opened.
                            return None;
                        }
                        Some(f.with_extension(
                            datafusion::datasource::physical_plan::parquet::ParquetRowSelection::new(
                                selection(&ranges, rows),
                            ),
                        ))
                    })
                    .collect::<Vec<_>>();
                *group = files.into();
            }
            let cfg = FileScanConfigBuilder::from(cfg).build();
            Ok(Transformed::yes(
                DataSourceExec::from_data_source(cfg) as Arc<dyn ExecutionPlan>
            ))
        })?;
        Ok(out.data)
    }
}

/// The path of a file a scan reads, as the scan names it.
fn scanned_path(location: &object_store::path::Path) -> PathBuf {
    PathBuf::from(format!("/{location}"))
}

/// The path a scan of the store file at `path` names it by (as [`scanned_path`]), which
/// [`crate::topk::Bound`] must use: DataFusion makes a relative path absolute and encodes
/// it as an object-store path.
pub fn scan_name(path: &std::path::Path) -> Option<PathBuf> {
    let url = datafusion::datasource::listing::ListingTableUrl::parse(path.to_str()?).ok()?;
    Some(scanned_path(url.prefix()))
}

/// [`scan_name`]s computed, by absolute path: naming a file as the scan does looks at
/// the filesystem (whether the path exists, whether it is a folder), twice per file per
/// order query otherwise. Store files' names are never reused.
#[derive(Debug, Default)]
pub struct ScanNames(std::sync::Mutex<std::collections::HashMap<PathBuf, Option<PathBuf>>>);

/// Names kept at most; beyond, the cache starts again.
const SCAN_NAMES: usize = 16_384;

impl ScanNames {
    /// [`scan_name`] of `path`, from the cache when it was named before.
    pub fn get(&self, path: &std::path::Path) -> Option<PathBuf> {
        // Keyed by the absolute path: a relative one names another file once the
        // process's folder changes.
        let key = std::path::absolute(path).ok()?;
        if let Some(n) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return n.clone();
        }
        let n = scan_name(&key);
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= SCAN_NAMES {
            c.clear();
        }
        c.insert(key, n.clone());
        n
    }
}

/// The blocks of a file whose text may meet `need` (start, rows; in order), and the
/// file's rows; none when the file has no text index (it is read whole).
fn text_ranges(
    store: &Store,
    path: &std::path::Path,
    need: &Need,
) -> Option<(Vec<(u64, u64)>, u64)> {
    match store.text_index(path) {
        Ok(Some(index)) => Some((index.select(need), index.rows)),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "text index unreadable; the file is read whole");
            None
        }
    }
}

/// The row groups of a file that can reach `bound` (start, rows; in order), and the
/// file's rows; none when its footer cannot be read (it is read whole).
fn order_ranges(
    store: &Store,
    path: &std::path::Path,
    bound: &crate::topk::Bound,
) -> Option<(Vec<(u64, u64)>, u64)> {
    if let Some(rows) = bound.rows.as_ref().and_then(|r| r.get(path)) {
        // The rows picked by the ordered column, read first.
        if let Ok(z) = store.zone_map(path) {
            return Some((rows.clone(), z.zones.iter().map(|z| z.rows).sum()));
        }
    }
    let zones = match store.zone_map(path) {
        Ok(z) => z,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "footer unreadable; the file is read whole");
            return None;
        }
    };
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut at = 0u64;
    for (i, z) in zones.zones.iter().enumerate() {
        if bound.keeps(path, i, z) && z.rows > 0 {
            match ranges.last_mut() {
                Some(last) if last.0 + last.1 == at => last.1 += z.rows,
                _ => ranges.push((at, z.rows)),
            }
        }
        at += z.rows;
    }
    Some((ranges, at))
}

/// The rows in both lists of ranges (start, rows; each in order, not overlapping).
fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (a0, a1) = (a[i].0, a[i].0 + a[i].1);
        let (b0, b1) = (b[j].0, b[j].0 + b[j].1);
        let (lo, hi) = (a0.max(b0), a1.min(b1));
        if lo < hi {
            out.push((lo, hi - lo));
        }
        if a1 <= b1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The rows of `ranges` (start, rows; in order) among `rows`.
fn selection(
    ranges: &[(u64, u64)],
    rows: u64,
) -> datafusion::parquet::arrow::arrow_reader::RowSelection {
    use datafusion::parquet::arrow::arrow_reader::RowSelector;
    let mut sel = Vec::with_capacity(ranges.len() * 2 + 1);
    let mut at = 0u64;
    for &(start, n) in ranges {
        if start > at {
            sel.push(RowSelector::skip((start - at) as usize));
        }
        sel.push(RowSelector::select(n as usize));
        at = start + n;
    }
    if rows > at {
        sel.push(RowSelector::skip((rows - at) as usize));
    }
    sel.into()
}

/// Is `e` the text the index covers: a body column, or the rebuilt message?
fn indexed_text(e: &Expr) -> bool {
    match e {
        Expr::Column(c) => matches!(c.name.as_str(), "input_body_json" | "output_body_json"),
        Expr::Cast(c) if is_string(c.field.data_type()) => indexed_text(&c.expr),
        Expr::TryCast(c) if is_string(c.field.data_type()) => indexed_text(&c.expr),
        Expr::Alias(a) => indexed_text(&a.expr),
        Expr::ScalarFunction(f) if f.func.name() == "rebuild_message" => {
            let names: Vec<Option<&str>> = f
                .args
                .iter()
                .map(|a| match a {
                    Expr::Column(c) => Some(c.name.as_str()),
                    _ => None,
                })
                .collect();
            names
                == [
                    Some("message"),
                    Some("input_body_json"),
                    Some("output_body_json"),
                ]
        }
        _ => false,
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn text_literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Some(s),
        Expr::Cast(c) if is_string(c.field.data_type()) => text_literal(&c.expr),
        _ => None,
    }
}

/// What a filter requires of the indexed text of a row it keeps; none when it requires
/// nothing the index can check.
pub fn need_of(e: &Expr) -> Option<Need> {
    match e {
        Expr::BinaryExpr(b) => match b.op {
            Operator::And => match (need_of(&b.left), need_of(&b.right)) {
                (Some(l), Some(r)) => Some(Need::All(vec![l, r])),
                (l, r) => l.or(r),
            },
            Operator::Or => Some(Need::Any(vec![need_of(&b.left)?, need_of(&b.right)?])),
            Operator::RegexMatch | Operator::RegexIMatch if indexed_text(&b.left) => {
                regex_need(text_literal(&b.right)?, b.op == Operator::RegexIMatch)
            }
            _ => None,
        },
        Expr::Like(l) if !l.negated && indexed_text(&l.expr) => like_need(
            text_literal(&l.pattern)?,
            l.escape_char.unwrap_or('\\'),
            l.case_insensitive,
        ),
        Expr::ScalarFunction(f) => {
            let args = &f.args;
            match (f.func.name(), args.len()) {
                ("regexp_like", 2 | 3) if indexed_text(&args[0]) => {
                    let flags = match args.get(2) {
                        Some(a) => text_literal(a)?,
                        None => "",
                    };
                    let pat = text_literal(&args[1])?;
                    regex_need(&format!("(?{flags}){pat}"), false)
                }
                ("contains", 2) if indexed_text(&args[0]) => {
                    Need::contains(text_literal(&args[1])?.as_bytes())
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// A run of text every match holds; `fold`: the match ignores case.
#[derive(Default)]
struct Runs {
    runs: Vec<Need>,
    run: Vec<u8>,
}

impl Runs {
    fn push(&mut self, b: u8) {
        self.run.push(b);
    }
    fn end(&mut self) {
        if let Some(n) = Need::contains(&self.run) {
            self.runs.push(n);
        }
        self.run.clear();
    }
    fn need(mut self) -> Option<Need> {
        self.end();
        match self.runs.len() {
            0 => None,
            1 => self.runs.pop(),
            _ => Some(Need::All(self.runs)),
        }
    }
}

/// A byte every case-insensitive match of `c` has: ASCII letters other than `k` and `s`
/// (which Unicode folds with the Kelvin sign and the long s), and ASCII that is not a
/// letter.
fn folds_to_ascii(c: char) -> Option<u8> {
    (c.is_ascii() && !matches!(c.to_ascii_lowercase(), 'k' | 's')).then_some(c as u8)
}

/// `LIKE` pattern: the literal runs between wildcards.
fn like_need(pat: &str, escape: char, fold: bool) -> Option<Need> {
    let mut r = Runs::default();
    let mut chars = pat.chars();
    while let Some(c) = chars.next() {
        let c = if c == escape {
            match chars.next() {
                Some(n) => n,
                None => break,
            }
        } else if c == '%' || c == '_' {
            r.end();
            continue;
        } else {
            c
        };
        if fold {
            match folds_to_ascii(c) {
                Some(b) => r.push(b),
                None => r.end(),
            }
        } else {
            let mut buf = [0u8; 4];
            for &b in c.encode_utf8(&mut buf).as_bytes() {
                r.push(b);
            }
        }
    }
    r.need()
}

/// A regular expression (the `regex` crate's syntax, as DataFusion's): what every match
/// contains.
fn regex_need(pat: &str, fold: bool) -> Option<Need> {
    let hir = regex_syntax::ParserBuilder::new()
        .case_insensitive(fold)
        .build()
        .parse(pat)
        .ok()?;
    hir_need(&hir)
}

/// The one byte a class matches, case folded: `[Aa]` (a case-insensitive ASCII letter
/// other than k and s, whose classes hold a third letter) or a single ASCII byte.
fn class_byte(c: &regex_syntax::hir::Class) -> Option<u8> {
    use regex_syntax::hir::Class;
    let chars: Vec<u32> = match c {
        Class::Unicode(u) => {
            let mut v = Vec::new();
            for r in u.ranges() {
                let (a, b) = (r.start() as u32, r.end() as u32);
                if b - a > 1 || v.len() > 2 {
                    return None;
                }
                v.extend(a..=b);
            }
            v
        }
        Class::Bytes(by) => {
            let mut v = Vec::new();
            for r in by.ranges() {
                let (a, b) = (u32::from(r.start()), u32::from(r.end()));
                if b - a > 1 || v.len() > 2 {
                    return None;
                }
                v.extend(a..=b);
            }
            v
        }
    };
    let ascii: Vec<u8> = chars
        .iter()
        .map(|&c| u8::try_from(c).ok().filter(u8::is_ascii))
        .collect::<Option<_>>()?;
    match ascii.as_slice() {
        [one] => Some(*one),
        [a, b] if a.eq_ignore_ascii_case(b) && a != b => Some(a.to_ascii_lowercase()),
        _ => None,
    }
}

fn hir_need(h: &regex_syntax::hir::Hir) -> Option<Need> {
    use regex_syntax::hir::HirKind;
    match h.kind() {
        HirKind::Literal(l) => Need::contains(&l.0),
        HirKind::Capture(c) => hir_need(&c.sub),
        HirKind::Repetition(r) if r.min >= 1 => hir_need(&r.sub),
        HirKind::Concat(subs) => {
            let mut r = Runs::default();
            let mut others = Vec::new();
            for s in subs {
                match s.kind() {
                    HirKind::Literal(l) => l.0.iter().for_each(|&b| r.push(b)),
                    HirKind::Class(c) => match class_byte(c) {
                        Some(b) => r.push(b),
                        None => r.end(),
                    },
                    _ => {
                        r.end();
                        if let Some(n) = hir_need(s) {
                            others.push(n);
                        }
                    }
                }
            }
            let mut all: Vec<Need> = r.need().into_iter().collect();
            all.extend(others);
            match all.len() {
                0 => None,
                1 => all.pop(),
                _ => Some(Need::All(all)),
            }
        }
        HirKind::Alternation(subs) => Some(Need::Any(
            subs.iter().map(hir_need).collect::<Option<Vec<_>>>()?,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> Need {
        Need::contains(s.as_bytes()).unwrap_or(Need::All(Vec::new()))
    }

    #[test]
    fn ranges_intersect_to_the_rows_in_both() {
        assert_eq!(intersect(&[(0, 10)], &[(5, 10)]), vec![(5, 5)]);
        assert_eq!(
            intersect(&[(0, 4), (6, 4), (20, 5)], &[(2, 6), (9, 13)]),
            vec![(2, 2), (6, 2), (9, 1), (20, 2)]
        );
        assert_eq!(intersect(&[(0, 4)], &[(4, 4)]), vec![]);
        assert_eq!(intersect(&[], &[(0, 4)]), vec![]);
    }

    #[test]
    fn like_patterns_need_their_literal_runs() {
        assert_eq!(
            like_need("%rare-phrase%", '\\', false),
            Some(g("rare-phrase"))
        );
        assert_eq!(
            like_need("%ab%cdef_ghij%", '\\', false),
            Some(Need::All(vec![g("cdef"), g("ghij")]))
        );
        // Escaped wildcards are text.
        assert_eq!(like_need("%100\\%_x%", '\\', false), Some(g("100%")));
        assert_eq!(like_need("%ab%", '\\', false), None);
        // Case-insensitive: k and s (and anything not ASCII) end a run.
        assert_eq!(like_need("%Rare-Phrase%", '\\', true), Some(g("rare-phra")));
        assert_eq!(like_need("%desk lamp%", '\\', true), Some(g(" lamp")));
        assert_eq!(like_need("%Ünïcode%", '\\', false), Some(g("Ünïcode")));
        assert_eq!(like_need("%Ünïcode%", '\\', true), Some(g("code")));
    }

    #[test]
    fn regexes_need_what_every_match_holds() {
        assert_eq!(regex_need("rare-phrase", false), Some(g("rare-phrase")));
        assert_eq!(
            regex_need("rare.phrase", false),
            Some(Need::All(vec![g("rare"), g("phrase")]))
        );
        assert_eq!(regex_need("(?i)Rare-Phrase", false), Some(g("rare-phra")));
        assert_eq!(regex_need("Rare", true), Some(g("rare")));
        assert_eq!(
            regex_need("alpha|beta", false),
            Some(Need::Any(vec![g("alpha"), g("beta")]))
        );
        assert_eq!(regex_need("alpha|be", false), None);
        assert_eq!(regex_need("x(abc)+y", false), Some(g("abc")));
        assert_eq!(regex_need("x(abc)*y", false), None);
        assert_eq!(regex_need("^abc$", false), Some(g("abc")));
        assert_eq!(regex_need("[0-9]{3}-[0-9]{2}", false), None);
        assert_eq!(regex_need("(unclosed", false), None);
    }
}
