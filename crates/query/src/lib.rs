//! Queries over log groups and archives, on DataFusion: the Logs Insights language
//! (compiled to DataFusion plans) and SQL over the same data.
//!
//! SQL sees two tables: `invocations` (the selected log groups; typed snake_case columns
//! plus `message`, the whole record, and `log_group`) and `archive` (the Bedrock-format
//! `.json.gz` objects of a bucket, same columns but `log_group`).

use datafusion::arrow::array::{Array, Float64Array, RecordBatch};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::{cast, ident, lit, Expr};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use logbook_store::{schema, Store};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

pub mod archive;
pub mod chargeback;
pub mod from_rollups;
pub mod insights;
pub mod metrics;
pub mod overview;
pub mod report;
pub mod service;
pub mod textsearch;
pub mod topk;
pub mod udf;

pub use service::{Limits, QueryService};

/// Query errors.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query text is malformed.
    #[error("syntax error at {0}")]
    Syntax(#[from] insights::SyntaxError),
    /// The query is well-formed but cannot be planned or run.
    #[error("{0}")]
    Invalid(String),
    /// The log group does not exist.
    #[error("The specified log group does not exist: {0}")]
    NoSuchGroup(String),
    /// The engine failed.
    #[error("query failed: {0}")]
    Engine(String),
    /// A limit was reached: too many queries at once, or the query's memory.
    #[error("{0}")]
    LimitExceeded(String),
    /// The query ran past its time limit and was stopped.
    #[error("the query ran longer than its time limit of {} s and was stopped", .0.as_secs_f64())]
    Timeout(std::time::Duration),
    /// The query was cancelled (StopQuery, the client left, shutdown).
    #[error("{0}")]
    Cancelled(String),
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::arrow::error::ArrowError as A;
        use datafusion::error::DataFusionError as D;
        // Errors raised while analyzing the plan (type coercion, an optimizer rule) are about
        // the query, whatever their kind.
        fn analyzing(e: &D) -> bool {
            match e {
                D::Context(c, inner) => {
                    c == "type_coercion" || c.starts_with("Optimizer rule") || analyzing(inner)
                }
                _ => false,
            }
        }
        let planning = analyzing(&e);
        match e.find_root() {
            D::Plan(m) => QueryError::Invalid(m.clone()),
            D::Execution(m) if planning => QueryError::Invalid(m.clone()),
            // Values the query itself asks to convert or compute wrongly ('us-east-1' as
            // a number, a division by zero): the query's fault, said precisely.
            D::ArrowError(a, _)
                if matches!(
                    a.as_ref(),
                    A::CastError(_)
                        | A::ParseError(_)
                        | A::ComputeError(_)
                        | A::InvalidArgumentError(_)
                        | A::DivideByZero
                        | A::ArithmeticOverflow(_)
                ) =>
            {
                QueryError::Invalid(a.to_string())
            }
            // DataFusion reports a function given the wrong types as an internal error.
            D::Internal(m)
                if m.contains("No function matches the given name and argument types") =>
            {
                let why = m
                    .find("No function matches")
                    .map_or(m.as_str(), |i| &m[i..]);
                QueryError::Invalid(why.to_string())
            }
            D::SQL(e, _) => QueryError::Invalid(e.to_string()),
            D::SchemaError(e, _) => QueryError::Invalid(e.to_string()),
            D::ResourcesExhausted(m) => QueryError::LimitExceeded(m.clone()),
            _ => QueryError::Engine(e.to_string()),
        }
    }
}

impl From<insights::compile::CompileError> for QueryError {
    fn from(e: insights::compile::CompileError) -> Self {
        match e {
            insights::compile::CompileError::Query(m) => QueryError::Invalid(m),
            insights::compile::CompileError::DataFusion(e) => e.into(),
        }
    }
}

/// Most operators in a SQL query (each is a node of an expression tree the planner walks).
pub const MAX_SQL_OPERATORS: usize = 500;
/// Most `SELECT`s in a SQL query (subqueries nest plans).
pub const MAX_SQL_SELECTS: usize = 64;

/// Refuse SQL whose shape would make planning slow or deep before it is planned: count
/// operators and `SELECT`s over the tokens (DataFusion's parser already limits nesting of
/// parentheses; a long flat chain is parsed without recursion but planned with it).
pub fn check_sql_shape(sql: &str) -> Result<(), QueryError> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| QueryError::Invalid(e.to_string()))?;
    let (mut ops, mut selects) = (0usize, 0usize);
    for t in &tokens {
        match t {
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::StringConcat
            | Token::LParen => ops += 1,
            Token::Word(w) => match w.keyword {
                Keyword::AND | Keyword::OR | Keyword::NOT | Keyword::CASE | Keyword::WHEN => {
                    ops += 1
                }
                Keyword::SELECT => selects += 1,
                _ => {}
            },
            _ => {}
        }
    }
    if ops > MAX_SQL_OPERATORS {
        return Err(QueryError::Invalid(format!(
            "the query has more than {MAX_SQL_OPERATORS} operators and parentheses; simplify it"
        )));
    }
    if selects > MAX_SQL_SELECTS {
        return Err(QueryError::Invalid(format!(
            "the query has more than {MAX_SQL_SELECTS} SELECTs; simplify it"
        )));
    }
    Ok(())
}

/// Query language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// CloudWatch Logs Insights.
    Insights,
    /// SQL (DataFusion's dialect).
    Sql,
}

/// A query.
#[derive(Debug, Clone)]
pub struct QueryRequest {
    /// Log groups (at least one for Insights; SQL's `invocations` table reads these).
    pub groups: Vec<String>,
    /// Start, epoch ms (inclusive).
    pub start_ms: i64,
    /// End, epoch ms (inclusive).
    pub end_ms: i64,
    /// The query text.
    pub query: String,
    /// Its language.
    pub language: Language,
    /// At most this many rows.
    pub limit: usize,
    /// Read-your-writes: wait until the log groups have taken in every journal entry
    /// before this sequence (the journal's committed position when the query arrived, so
    /// the caller's own earlier calls are in the answer). 0: no wait.
    pub after_seq: u64,
    /// What the caller may see of record bodies.
    pub content: Content,
}

/// What a query may see of record bodies (prompts, answers): everything, bodies passed
/// through a redaction profile, or none. Applied to the log groups' rows before the
/// query's own plan, so no filter, aggregate or alias can reach what the caller may not
/// see; the SQL `archive` table (raw objects) is only there for `Full`.
#[derive(Debug, Clone, Default)]
pub enum Content {
    /// Bodies as recorded.
    #[default]
    Full,
    /// Bodies (and `@message`) masked by this profile.
    Redacted(Arc<logbook_redact::Redactor>),
    /// No bodies: they read as null, and `@message` is the record without them.
    Metadata,
}

/// The columns that hold bodies.
const BODY_COLUMNS: [&str; 3] = ["input_body_json", "output_body_json", "message"];

fn apply_content(mut df: DataFrame, content: &Content) -> Result<DataFrame, QueryError> {
    match content {
        Content::Full => {}
        Content::Metadata => {
            for c in ["input_body_json", "output_body_json"] {
                df = df.with_column(c, lit(ScalarValue::Utf8(None)))?;
            }
            let strip = datafusion::logical_expr::ScalarUDF::from(udf::StripBodies::default());
            df = df.with_column("message", strip.call(vec![ident("message")]))?;
        }
        Content::Redacted(r) => {
            for c in BODY_COLUMNS {
                let f = datafusion::logical_expr::ScalarUDF::from(udf::Redact::new(
                    r.clone(),
                    c == "message",
                ));
                df = df.with_column(c, f.call(vec![ident(c)]))?;
            }
        }
    }
    Ok(df)
}

/// The longest a query waits for ingest to reach its `after_seq` before it runs anyway.
pub const READ_YOUR_WRITES_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Scan statistics (CloudWatch's `statistics`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryStats {
    /// Records in the time range of the groups read.
    pub records_scanned: u64,
    /// Records matched (rows returned, or records aggregated).
    pub records_matched: u64,
    /// Bytes of the files read.
    pub bytes_scanned: u64,
    /// Files read.
    pub files_scanned: u64,
}

/// A result: named columns and rows of display strings (`None` for null).
#[derive(Debug, Clone, Default)]
pub struct QueryResult {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<Option<String>>>,
    /// Statistics.
    pub stats: QueryStats,
}

/// The query engine over a store (and optionally an archive folder).
pub struct Engine {
    store: Arc<Store>,
    archive: Option<Arc<dyn object_store::ObjectStore>>,
    partitions: usize,
    /// Shared by every query, so DataFusion's caches (Parquet footers, file statistics)
    /// survive from one query to the next. Data files are immutable, so nothing goes stale.
    runtime: Arc<RuntimeEnv>,
    /// Queries never spill to disk: the disk is the journal's.
    no_spill: Arc<datafusion::execution::disk_manager::DiskManager>,
    /// Other replicas' store files (`[cluster]`), read beside this one's.
    peers: Option<Arc<dyn PeerFiles>>,
    /// Scan every file even where a rollup could answer ([`Engine::from_rollups`]).
    rollups_off: bool,
    /// Read every row group even where a query keeps only the first rows of an order
    /// ([`Engine::order_bounds`]).
    order_bounds_off: bool,
    /// Rows an order query reads of the ordered column first, at most
    /// ([`Engine::order_pick_budget`]).
    pick_budget: u64,
    /// Rows reaching an order query's bound kept while it picks, at most
    /// ([`Engine::order_pick_candidates`]).
    pick_candidates: usize,
    /// Store files named as scans name them.
    scan_names: textsearch::ScanNames,
}

/// The store files of other replicas that share a home bucket (issue #13): what a query
/// reads besides this replica's own store.
#[async_trait::async_trait]
pub trait PeerFiles: Send + Sync {
    /// Files of `group` that may hold rows in `[start, end]` (epoch ms): a location
    /// DataFusion can read (an absolute path, or a URL of [`PeerFiles::object_store`])
    /// and the file's metadata. Replicas whose manifests cannot be trusted are left out
    /// (and reported by the implementation).
    async fn files(
        &self,
        group: &str,
        start: i64,
        end: i64,
    ) -> Vec<(String, logbook_store::FileMeta)>;
    /// The object store the locations are in, and its URL (`s3://bucket`), when they
    /// are not local paths.
    fn object_store(&self) -> Option<(String, Arc<dyn object_store::ObjectStore>)>;
}

use datafusion::execution::runtime_env::RuntimeEnv;

/// The id under which [`StoreDecryption`] is registered with DataFusion.
const DECRYPTION_FACTORY: &str = "logbook-store";

/// Opens the store's encrypted Parquet files for DataFusion: each file's data key is in
/// its own footer metadata, wrapped by a master key of the store's keyring
/// ([`logbook_store::KeyRetriever`]). Files that are not encrypted read as before.
#[derive(Debug)]
struct StoreDecryption(Arc<logbook_store::Keyring>);

#[async_trait::async_trait]
impl datafusion::execution::parquet_encryption::EncryptionFactory for StoreDecryption {
    async fn get_file_encryption_properties(
        &self,
        _config: &datafusion::config::EncryptionFactoryOptions,
        _schema: &datafusion::arrow::datatypes::SchemaRef,
        _file_path: &object_store::path::Path,
    ) -> datafusion::error::Result<
        Option<Arc<datafusion::parquet::encryption::encrypt::FileEncryptionProperties>>,
    > {
        Ok(None) // queries never write
    }

    async fn get_file_decryption_properties(
        &self,
        _config: &datafusion::config::EncryptionFactoryOptions,
        _file_path: &object_store::path::Path,
    ) -> datafusion::error::Result<
        Option<Arc<datafusion::parquet::encryption::decrypt::FileDecryptionProperties>>,
    > {
        logbook_store::decryption_properties(&self.0)
            .map(Some)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
    }
}

/// The log stream every record belongs to (Bedrock's documented stream name).
pub const LOG_STREAM: &str = "aws/bedrock/modelinvocations";

/// The timestamp format of results (`2025-03-11 00:38:02.000`).
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.3f";

impl Engine {
    /// An engine over `store`; `archive` is the bucket SQL's `archive` table reads.
    pub fn new(store: Arc<Store>, archive: Option<Arc<dyn object_store::ObjectStore>>) -> Engine {
        let partitions = std::thread::available_parallelism().map_or(2, |n| n.get());
        let runtime = Arc::new(RuntimeEnv::default());
        runtime.register_parquet_encryption_factory(
            DECRYPTION_FACTORY,
            Arc::new(StoreDecryption(store.keys().clone())),
        );
        // Building a disabled disk manager creates nothing, so it cannot fail in practice;
        // should it, queries keep the default one.
        let no_spill = datafusion::execution::disk_manager::DiskManagerBuilder::default()
            .with_mode(datafusion::execution::disk_manager::DiskManagerMode::Disabled)
            .build()
            .map(Arc::new)
            .unwrap_or_else(|_| runtime.disk_manager.clone());
        Engine {
            store,
            archive,
            partitions,
            runtime,
            no_spill,
            peers: None,
            rollups_off: false,
            order_bounds_off: false,
            pick_budget: PICK_BUDGET_ROWS,
            pick_candidates: PICK_CANDIDATES_MAX,
            scan_names: textsearch::ScanNames::default(),
        }
    }

    /// Read other replicas' store files too (`[cluster]`).
    pub fn with_peers(mut self, peers: Arc<dyn PeerFiles>) -> Result<Engine, QueryError> {
        if let Some((url, store)) = peers.object_store() {
            let u = datafusion::execution::object_store::ObjectStoreUrl::parse(&url)?;
            self.runtime.register_object_store(u.as_ref(), store);
        }
        self.peers = Some(peers);
        Ok(self)
    }

    /// Whether Insights `stats` of token counts may be answered from the store files'
    /// rollups ([`from_rollups`]; on by default). Off, every file is scanned: tests compare
    /// the two.
    pub fn from_rollups(mut self, on: bool) -> Engine {
        self.rollups_off = !on;
        self
    }

    /// Whether an Insights query that keeps the first rows of one column's order reads
    /// only the row groups that can hold them ([`topk`]; on by default). Off, every row
    /// group is read: tests compare the two.
    pub fn order_bounds(mut self, on: bool) -> Engine {
        self.order_bounds_off = !on;
        self
    }

    /// The rows an order query may read of its ordered column before whole rows (4,000,000
    /// by default); past it, the row groups that can hold its first rows are read whole.
    /// Tests set 0 to compare that path.
    pub fn order_pick_budget(mut self, rows: u64) -> Engine {
        self.pick_budget = rows;
        self
    }

    /// The rows reaching an order query's bound it may keep while it picks (1,048,576 by
    /// default); past it, the row groups that can hold its first rows are read whole.
    /// Tests set a few to compare that path.
    pub fn order_pick_candidates(mut self, rows: usize) -> Engine {
        self.pick_candidates = rows;
        self
    }

    /// A runtime for one query: its own memory pool, no spilling, the shared caches.
    pub fn query_env(
        &self,
        pool: Arc<dyn datafusion::execution::memory_pool::MemoryPool>,
    ) -> Arc<RuntimeEnv> {
        Arc::new(RuntimeEnv {
            memory_pool: pool,
            disk_manager: self.no_spill.clone(),
            cache_manager: self.runtime.cache_manager.clone(),
            object_store_registry: self.runtime.object_store_registry.clone(),
            parquet_encryption_factory_registry: self
                .runtime
                .parquet_encryption_factory_registry
                .clone(),
        })
    }

    fn context(&self, env: Arc<RuntimeEnv>) -> SessionContext {
        let cfg = SessionConfig::new()
            .with_target_partitions(self.partitions)
            .with_information_schema(true);
        // Filters are not pushed into the Parquet scan: measured on 1M records (BENCHMARKS.md)
        // it made aggregates ~15% slower and did not speed up the needle search.
        let cfg = cfg.with_extension(Arc::new(textsearch::Skipped::default()));
        let ctx = SessionContext::new_with_config_rt(cfg, env);
        if self.store.keys().ids().next().is_some() {
            // Some files may be encrypted: let DataFusion ask for their keys.
            ctx.state_ref()
                .write()
                .table_options_mut()
                .parquet
                .crypto
                .factory_id = Some(DECRYPTION_FACTORY.into());
        }
        for f in udf::all() {
            ctx.register_udf(f);
        }
        ctx
    }

    /// What the store holds of a group in a time range.
    fn snapshot(
        &self,
        group: &str,
        start: i64,
        end: i64,
    ) -> Result<logbook_store::Snapshot, QueryError> {
        self.store.snapshot(group, start, end).map_err(|e| match e {
            logbook_store::StoreError::NoSuchGroup(g) => QueryError::NoSuchGroup(g),
            other => QueryError::Engine(other.to_string()),
        })
    }

    /// The raw (snake_case) rows of one group in a time range, with `log_group`, from a
    /// snapshot taken before (and perhaps narrowed), with other replicas' files.
    #[allow(clippy::too_many_arguments)]
    async fn raw_frame_of(
        &self,
        ctx: &SessionContext,
        group: &str,
        snap: logbook_store::Snapshot,
        start: i64,
        end: i64,
        bound: Option<topk::Bound>,
        stats: &mut QueryStats,
        fields: &mut BTreeSet<String>,
    ) -> Result<DataFrame, QueryError> {
        fields.extend(snap.fields.iter().cloned());
        let schema = schema::schema();
        let lo = start.max(snap.retention_cutoff.unwrap_or(i64::MIN));
        let ts = |ms: i64| {
            lit(ScalarValue::TimestampMillisecond(
                Some(ms),
                Some("UTC".into()),
            ))
        };
        let in_range = |df: DataFrame| {
            df.filter(
                ident("timestamp")
                    .gt_eq(ts(lo))
                    .and(ident("timestamp").lt_eq(ts(end))),
            )
        };
        let mut df: Option<DataFrame> = None;
        if !snap.files.is_empty() {
            stats.bytes_scanned += snap.files.iter().map(|(_, m)| m.bytes).sum::<u64>();
            stats.files_scanned += snap.files.len() as u64;
            stats.records_scanned += snap.files.iter().map(|(_, m)| m.rows).sum::<u64>();
            // Files wholly inside the range need no filter on it (nor their timestamps
            // read): the usual case, a query over whole hours or days.
            let inside = snap
                .files
                .iter()
                .all(|(_, m)| m.min_ts >= lo && m.max_ts <= end);
            let paths: Vec<String> = snap
                .files
                .iter()
                .map(|(p, _)| p.to_string_lossy().into_owned())
                .collect();
            let opts = ParquetReadOptions::default().schema(&schema);
            let files = ctx.read_parquet(paths, opts).await?;
            // Read through the files' text indexes (a text search reads only the blocks
            // that may hold its text).
            let table = match files.into_unoptimized_plan() {
                datafusion::logical_expr::LogicalPlan::TableScan(scan) => {
                    datafusion::datasource::source_as_provider(&scan.source)?
                }
                other => {
                    return Err(QueryError::Engine(format!(
                        "unexpected plan for store files: {}",
                        other.display()
                    )))
                }
            };
            let files = ctx.read_table(Arc::new(
                textsearch::IndexedFiles::new(table, self.store.clone()).with_bound(bound),
            ))?;
            df = Some(if inside { files } else { in_range(files)? });
        }
        if let Some(peers) = &self.peers {
            let theirs = peers.files(group, lo, end).await;
            if !theirs.is_empty() {
                stats.bytes_scanned += theirs.iter().map(|(_, m)| m.bytes).sum::<u64>();
                stats.files_scanned += theirs.len() as u64;
                stats.records_scanned += theirs.iter().map(|(_, m)| m.rows).sum::<u64>();
                // A listing reads from one object store: files a local cache holds (absolute
                // paths) and ones read from the home (URLs) are scanned apart.
                let (local, remote): (Vec<String>, Vec<String>) = theirs
                    .into_iter()
                    .map(|(p, _)| p)
                    .partition(|p| p.starts_with('/'));
                for paths in [local, remote] {
                    if paths.is_empty() {
                        continue;
                    }
                    let opts = ParquetReadOptions::default().schema(&schema);
                    let t = in_range(ctx.read_parquet(paths, opts).await?)?;
                    df = Some(match df {
                        Some(d) => d.union(t)?,
                        None => t,
                    });
                }
            }
        }
        if !snap.tail.is_empty() || df.is_none() {
            stats.records_scanned += snap.tail.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            let batches = if snap.tail.is_empty() {
                vec![RecordBatch::new_empty(schema.clone())]
            } else {
                snap.tail
            };
            let t = in_range(ctx.read_batches(batches)?)?;
            df = Some(match df {
                Some(d) => d.union(t)?,
                None => t,
            });
        }
        let mut df = df.ok_or_else(|| QueryError::Engine("no data".into()))?;
        // `message` as recorded: the store keeps each body once.
        let rebuild = datafusion::logical_expr::ScalarUDF::from(udf::RebuildMessage::default());
        df = df.with_column(
            "message",
            rebuild.call(vec![
                ident("message"),
                ident("input_body_json"),
                ident("output_body_json"),
            ]),
        )?;
        if let Some(bc) = snap.body_cutoff {
            // Past the group's body retention: no bodies, whatever the file still holds
            // (the tail, or a file not yet written again without them).
            let old = ident("timestamp").lt(ts(bc));
            for c in ["input_body_json", "output_body_json"] {
                let e = datafusion::logical_expr::when(old.clone(), lit(ScalarValue::Utf8(None)))
                    .otherwise(ident(c))?;
                df = df.with_column(c, e)?;
            }
            let strip = datafusion::logical_expr::ScalarUDF::from(udf::StripBodies::default());
            let e = datafusion::logical_expr::when(old, strip.call(vec![ident("message")]))
                .otherwise(ident("message"))?;
            df = df.with_column("message", e)?;
        }
        df = df.with_column("log_group", lit(group.to_string()))?;
        Ok(df)
    }

    async fn raw_union(
        &self,
        ctx: &SessionContext,
        req: &QueryRequest,
        stats: &mut QueryStats,
        fields: &mut BTreeSet<String>,
    ) -> Result<DataFrame, QueryError> {
        let (df, _) = self
            .raw_union_with(ctx, req, None, None, stats, fields)
            .await?;
        Ok(df)
    }

    /// [`Engine::raw_union`], less the files whose rollups answer at `grain` (when given),
    /// whose rows ([`from_rollups::Partials`]) come back beside it, and reading of the
    /// store's files only the row groups that can hold the first rows of `order` (when
    /// given).
    #[allow(clippy::too_many_arguments)]
    async fn raw_union_with(
        &self,
        ctx: &SessionContext,
        req: &QueryRequest,
        grain: Option<from_rollups::Grain>,
        order: Option<topk::Order>,
        stats: &mut QueryStats,
        fields: &mut BTreeSet<String>,
    ) -> Result<(DataFrame, Option<from_rollups::Partials>), QueryError> {
        let mut out: Option<DataFrame> = None;
        let mut partials = grain.map(from_rollups::Partials::new);
        let mut snaps = Vec::with_capacity(req.groups.len());
        for g in &req.groups {
            let mut snap = self.snapshot(g, req.start_ms, req.end_ms)?;
            if let Some(p) = partials.as_mut() {
                let lo = req.start_ms.max(snap.retention_cutoff.unwrap_or(i64::MIN));
                snap.files.retain(|(path, meta)| {
                    let inside = meta.rollup && meta.min_ts >= lo && meta.max_ts <= req.end_ms;
                    let taken = inside
                        && matches!(self.store.rollup(path), Ok(Some(r)) if p.take(&r, meta.min_ts));
                    !taken
                });
            }
            snaps.push((g, snap));
        }
        let bound = order.and_then(|o| self.order_bound(&o, &snaps, req.start_ms, req.end_ms));
        for (g, mut snap) in snaps {
            if let Some(rows) = bound.as_ref().and_then(|b| b.rows.as_ref()) {
                // Files none of whose rows were picked are not listed for the scan at all
                // (nor counted as scanned).
                snap.files.retain(|(p, _)| {
                    self.scan_names
                        .get(p)
                        .and_then(|n| rows.get(&n))
                        .is_none_or(|r| !r.is_empty())
                });
            }
            let d = self
                .raw_frame_of(
                    ctx,
                    g,
                    snap,
                    req.start_ms,
                    req.end_ms,
                    bound.clone(),
                    stats,
                    fields,
                )
                .await?;
            out = Some(match out {
                Some(o) => o.union(d)?,
                None => d,
            });
        }
        let out = out.ok_or_else(|| QueryError::Invalid("name at least one log group".into()))?;
        Ok((apply_content(out, &req.content)?, partials))
    }

    /// The [`topk::Bound`] the zone maps of the groups' store files give `order`, each
    /// group's rows answered from `start` (or its retention cutoff, if later) to `end`.
    /// A file whose footer cannot be read vouches for nothing (its scan reports why).
    fn order_bound(
        &self,
        order: &topk::Order,
        snaps: &[(&String, logbook_store::Snapshot)],
        start: i64,
        end: i64,
    ) -> Option<topk::Bound> {
        let mut maps = Vec::new();
        for (_, snap) in snaps {
            let lo = start.max(snap.retention_cutoff.unwrap_or(i64::MIN));
            for (path, _) in &snap.files {
                // Named as the scan names it; a file it cannot name vouches for nothing.
                let (Some(name), Ok(z)) = (self.scan_names.get(path), self.store.zone_map(path))
                else {
                    continue;
                };
                maps.push((name, path.clone(), z, lo));
            }
        }
        let zones: Vec<topk::ZoneAt<'_>> = maps
            .iter()
            .flat_map(|(file, _, m, lo)| {
                m.zones
                    .iter()
                    .enumerate()
                    .map(move |(index, zone)| topk::ZoneAt {
                        file,
                        index,
                        zone,
                        lo: *lo,
                        hi: end,
                    })
            })
            .collect();
        let mut bound = topk::bound(order, &zones)?;
        if let Some(rows) = self.order_rows(order, &bound, &maps, end) {
            bound.rows = Some(Arc::new(rows));
        }
        Some(bound)
    }

    /// Add to `candidates` the values of `column` that reach `bound` (no other can be among
    /// the first rows: at least `k` rows reach it), in the time range `range`, of row groups
    /// `groups` (index, rows; in order) of the store file `path` (number `n`), with their
    /// positions in the file. None when the file cannot be read as its zone map says, or
    /// when the candidates would pass [`Engine::order_pick_candidates`] (memory the query's pool does
    /// not see).
    #[allow(clippy::too_many_arguments)]
    fn read_candidates(
        &self,
        path: &std::path::Path,
        column: &str,
        m: &logbook_store::zonemap::ZoneMap,
        groups: &[(usize, u64)],
        range: (i64, i64),
        (n, bound): (usize, &topk::Bound),
        candidates: &mut Vec<topk::Candidate>,
    ) -> Option<()> {
        let starts: Vec<u64> = m
            .zones
            .iter()
            .scan(0u64, |at, z| {
                let s = *at;
                *at += z.rows;
                Some(s)
            })
            .collect();
        // Timestamps only where a row group is not wholly inside the range.
        let ts = schema::COLUMNS.iter().position(|c| c.name == "timestamp");
        let straddles = groups.iter().any(|(i, _)| {
            !matches!(ts.and_then(|t| m.zones[*i].ranges.get(t)), Some(Some(r))
                if r.min >= i128::from(range.0) && r.max <= i128::from(range.1))
        });
        let names: &[&str] = if straddles {
            &[column, "timestamp"]
        } else {
            &[column]
        };
        let batches = self
            .store
            .read_columns(path, names, groups.iter().map(|(i, _)| *i).collect())
            .map_err(|e| tracing::warn!(file = %path.display(), error = %e, "ordered column unreadable; the row groups are read"))
            .ok()?;
        // The positions of the rows read: the row groups' rows one after another.
        let mut positions = groups.iter().flat_map(|(i, r)| starts[*i]..starts[*i] + r);
        let (lo, hi) = (i128::from(range.0), i128::from(range.1));
        for b in &batches {
            let values = topk_values(b.column_by_name(column)?)?;
            let times = match straddles {
                true => topk_values(b.column_by_name("timestamp")?)?,
                false => vec![Some(lo); values.len()],
            };
            for (v, t) in values.into_iter().zip(times) {
                let row = positions.next()?;
                let inside = t.is_some_and(|t| t >= lo && t <= hi);
                if let (Some(value), true) = (v, inside) {
                    if !bound.reaches(value) {
                        continue;
                    }
                    if candidates.len() >= self.pick_candidates {
                        return None;
                    }
                    candidates.push(topk::Candidate {
                        file: n,
                        row,
                        value,
                    });
                }
            }
        }
        positions.next().is_none().then_some(())
    }

    /// The rows of each file (by the scan's name for it) the first rows of `order` are
    /// among, from the ordered column of the row groups `bound` keeps, read first: so whole
    /// rows are read only for those. None (the row groups are read whole) past a budget of
    /// rows, or when a file cannot be read.
    fn order_rows(
        &self,
        order: &topk::Order,
        bound: &topk::Bound,
        maps: &[(PathBuf, PathBuf, Arc<logbook_store::zonemap::ZoneMap>, i64)],
        end: i64,
    ) -> Option<topk::RowsOf> {
        let kept = |file: &PathBuf, m: &logbook_store::zonemap::ZoneMap| {
            m.zones
                .iter()
                .enumerate()
                .filter(|(i, z)| bound.keeps(file, *i, z))
                .map(|(i, z)| (i, z.rows))
                .collect::<Vec<_>>()
        };
        let rows: u64 = maps
            .iter()
            .map(|(f, _, m, _)| kept(f, m).iter().map(|(_, r)| r).sum::<u64>())
            .sum();
        if rows > self.pick_budget {
            return None;
        }
        let column = schema::COLUMNS.get(order.column)?.name;
        let mut candidates = Vec::new();
        // The row groups beyond the bound first (all of them hold rows that must be
        // weighed), then those tied at it (without a range, or with one key, only until
        // `k` rows reach the bound).
        let beyond = |r: &logbook_store::zonemap::Range| {
            if order.desc {
                r.max > bound.value
            } else {
                r.min < bound.value
            }
        };
        for pass_beyond in [true, false] {
            for (n, (file, path, m, lo)) in maps.iter().enumerate() {
                if !pass_beyond && order.single && candidates.len() >= order.k {
                    break;
                }
                let groups: Vec<(usize, u64)> = kept(file, m)
                    .into_iter()
                    .filter(|(i, _)| {
                        let b = matches!(m.zones[*i].ranges.get(order.column), Some(Some(r)) if !beyond(r));
                        // Pass one: beyond, or without a range; pass two: tied.
                        b != pass_beyond
                    })
                    .collect();
                if groups.is_empty() {
                    continue;
                }
                self.read_candidates(
                    path,
                    column,
                    m,
                    &groups,
                    (*lo, end),
                    (n, bound),
                    &mut candidates,
                )?;
            }
        }
        let mut picked: std::collections::HashMap<PathBuf, Vec<u64>> = maps
            .iter()
            .map(|(f, _, _, _)| (f.clone(), Vec::new()))
            .collect();
        for c in topk::pick(order, candidates) {
            if let Some(v) = picked.get_mut(&maps[c.file].0) {
                v.push(c.row);
            }
        }
        Some(
            picked
                .into_iter()
                .map(|(f, rows)| (f, topk::ranges(rows)))
                .collect(),
        )
    }

    /// Run a query in this thread's runtime, without limits (the CLI, tests). Servers run
    /// queries through a [`QueryService`].
    pub async fn run(&self, req: &QueryRequest) -> Result<QueryResult, QueryError> {
        self.run_in(req, self.runtime.clone()).await
    }

    /// Run a query with the given DataFusion runtime (memory pool).
    pub async fn run_in(
        &self,
        req: &QueryRequest,
        env: Arc<RuntimeEnv>,
    ) -> Result<QueryResult, QueryError> {
        self.wait_for_ingest(req.after_seq).await;
        let ctx = self.context(env);
        let mut stats = QueryStats::default();
        let mut fields = BTreeSet::new();
        let mut from_rollups_records = 0u64;
        let (df, columns, aggregated) = match req.language {
            Language::Insights => {
                let q = insights::parse(&req.query)?;
                let grain = if self.rollups_off {
                    None
                } else {
                    from_rollups::grain(&q)
                };
                let order = if self.order_bounds_off {
                    None
                } else {
                    topk::order_of(&q, req.limit)
                };
                let (raw, partials) = self
                    .raw_union_with(&ctx, req, grain, order, &mut stats, &mut fields)
                    .await?;
                let frame = insights_frame(raw)?;
                let mut rows = None;
                if let Some(p) = partials {
                    from_rollups_records = p.records;
                    if let Some(b) = p.finish() {
                        rows = Some(ctx.read_batch(b)?);
                    }
                }
                let c = insights::compile::compile(&ctx, frame, &q, &fields, req.limit, rows)?;
                (c.frame, c.columns, c.aggregated)
            }
            Language::Sql => {
                if !req.groups.is_empty() {
                    let raw = self.raw_union(&ctx, req, &mut stats, &mut fields).await?;
                    ctx.register_table("invocations", raw.into_view())?;
                }
                if let (Some(bucket), Content::Full) = (&self.archive, &req.content) {
                    ctx.register_table(
                        "archive",
                        Arc::new(archive::table(bucket.clone(), self.partitions).await?),
                    )?;
                }
                check_sql_shape(&req.query)?;
                // Queries only: no DDL (CREATE EXTERNAL TABLE, views), no DML (COPY TO,
                // INSERT), no statements (SET, PREPARE). A reader must not write.
                let read_only = datafusion::execution::context::SQLOptions::new()
                    .with_allow_ddl(false)
                    .with_allow_dml(false)
                    .with_allow_statements(false);
                let df = ctx
                    .sql_with_options(&req.query, read_only)
                    .await?
                    .limit(0, Some(req.limit))?;
                let cols = df
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                (df, cols, true)
            }
        };
        let batches = collect_cancellable(df).await?;
        stats.records_scanned = stats.records_scanned.saturating_sub(skipped_by_index(&ctx));
        let rows = format_rows(&batches)?;
        stats.records_matched = if aggregated {
            // Records a rollup answered for were matched, not read.
            stats.records_scanned.saturating_add(from_rollups_records)
        } else {
            rows.len() as u64
        };
        Ok(QueryResult {
            columns,
            rows,
            stats,
        })
    }

    /// Wait (bounded) until the store has taken in every journal entry before `seq`.
    async fn wait_for_ingest(&self, seq: u64) {
        if seq == 0 || self.store.next_seq() >= seq {
            return;
        }
        let deadline = tokio::time::Instant::now() + READ_YOUR_WRITES_WAIT;
        while self.store.next_seq() < seq {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    wanted = seq,
                    ingested = self.store.next_seq(),
                    "ingest is behind; the query runs without the newest records"
                );
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// One record by pointer (`@ptr`): all its fields, flattened, with `@message`.
    pub async fn record(&self, ptr: &str) -> Result<Vec<(String, String)>, QueryError> {
        self.record_in(ptr, self.runtime.clone()).await
    }

    /// [`Engine::record`] with the given DataFusion runtime.
    pub async fn record_in(
        &self,
        ptr: &str,
        env: Arc<RuntimeEnv>,
    ) -> Result<Vec<(String, String)>, QueryError> {
        let (rid, group) = ptr
            .rsplit_once('@')
            .ok_or_else(|| QueryError::Invalid("the log record pointer is not valid".into()))?;
        let req = QueryRequest {
            groups: vec![group.to_string()],
            start_ms: i64::MIN / 2,
            end_ms: i64::MAX / 2,
            query: String::new(),
            language: Language::Sql,
            limit: 1,
            after_seq: 0,
            content: Default::default(),
        };
        let ctx = self.context(env);
        let mut stats = QueryStats::default();
        let mut fields = BTreeSet::new();
        let raw = self.raw_union(&ctx, &req, &mut stats, &mut fields).await?;
        let df = raw
            .filter(ident("request_id").eq(lit(rid.to_string())))?
            .select(vec![ident("message"), ident("timestamp")])?
            .limit(0, Some(1))?;
        let rows = format_rows(&collect_cancellable(df).await?)?;
        let Some(row) = rows.into_iter().next() else {
            return Err(QueryError::Invalid(
                "the log record pointer does not name a record".into(),
            ));
        };
        let message = row.first().cloned().flatten().unwrap_or_default();
        let mut out = Vec::new();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&message) {
            let mut paths = BTreeSet::new();
            logbook_store::fields::flatten(&v, "", &mut paths);
            for p in paths {
                if let Some(s) = udf::walk(&v, &p).and_then(udf::value_text) {
                    out.push((p, s));
                }
            }
        }
        out.push((
            "@timestamp".into(),
            row.get(1).cloned().flatten().unwrap_or_default(),
        ));
        out.push(("@log".into(), format!("{}:{group}", account_of(&message))));
        out.push(("@logStream".into(), LOG_STREAM.into()));
        out.push(("@message".into(), message));
        Ok(out)
    }
}

fn account_of(message: &str) -> String {
    serde_json::from_str::<serde_json::Value>(message)
        .ok()
        .and_then(|v| {
            v.get("accountId")
                .and_then(|a| a.as_str())
                .map(String::from)
        })
        .unwrap_or_default()
}

/// Run a plan so that it can be stopped: every operator's output passes through
/// DataFusion's `CooperativeExec`, which spends tokio's task budget per batch. An operator
/// that produces batch after batch without waiting (a cross join feeding an aggregate)
/// then still yields to the scheduler regularly, so aborting the query's task (StopQuery,
/// a client gone, the time limit, shutdown) takes effect within a batch or so, instead of
/// when the operator finishes.
async fn collect_cancellable(df: DataFrame) -> Result<Vec<RecordBatch>, QueryError> {
    let (plan, task) = cooperative_plan(df).await?;
    Ok(datafusion::physical_plan::collect(plan, task).await?)
}

/// [`collect_cancellable`] as a stream of batches, for callers that fold them as they come.
async fn stream_cancellable(
    df: DataFrame,
) -> Result<datafusion::execution::SendableRecordBatchStream, QueryError> {
    let (plan, task) = cooperative_plan(df).await?;
    Ok(datafusion::physical_plan::execute_stream(plan, task)?)
}

/// The physical plan of `df` with every operator yielding to the runtime between batches.
async fn cooperative_plan(
    df: DataFrame,
) -> Result<
    (
        Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        Arc<datafusion::execution::TaskContext>,
    ),
    QueryError,
> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::physical_plan::coop::CooperativeExec;
    use datafusion::physical_plan::ExecutionPlan;
    let task = df.task_ctx();
    let plan = df.create_physical_plan().await?;
    let plan = plan
        .transform_up(|node| {
            Ok(Transformed::yes(
                Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>
            ))
        })?
        .data;
    Ok((plan, Arc::new(task)))
}

/// Rows the text index let the queries of `ctx` skip so far.
fn skipped_by_index(ctx: &SessionContext) -> u64 {
    ctx.state()
        .config()
        .get_extension::<textsearch::Skipped>()
        .map_or(0, |s| s.0.load(std::sync::atomic::Ordering::Relaxed))
}

/// Rename the raw columns to the names Insights uses and add the system fields.
pub fn insights_frame(raw: DataFrame) -> Result<DataFrame, QueryError> {
    let mut sel: Vec<Expr> = Vec::new();
    for c in schema::COLUMNS {
        let name = match c.name {
            "timestamp" => "@timestamp",
            _ => c.path,
        };
        sel.push(ident(c.name).alias(name));
    }
    let concat = |parts: Vec<Expr>| datafusion::functions::string::expr_fn::concat(parts);
    sel.push(lit(LOG_STREAM).alias("@logStream"));
    sel.push(
        concat(vec![
            datafusion::functions::core::expr_fn::coalesce(vec![ident("account_id"), lit("")]),
            lit(":"),
            ident("log_group"),
        ])
        .alias("@log"),
    );
    sel.push(
        concat(vec![
            datafusion::functions::core::expr_fn::coalesce(vec![ident("request_id"), lit("")]),
            lit("@"),
            ident("log_group"),
        ])
        .alias("@ptr"),
    );
    let _ = cast;
    Ok(raw.select(sel)?)
}

/// Rows an order query reads of the ordered column first, at most (beyond, it reads the
/// row groups that can hold its first rows whole).
const PICK_BUDGET_ROWS: u64 = 4_000_000;

/// Rows reaching an order query's bound it keeps while it picks, at most (32 bytes each;
/// beyond, for example many rows tied with more than one sort key, it reads the row groups).
const PICK_CANDIDATES_MAX: usize = 1 << 20;

/// An integer, timestamp or decimal column's values (a decimal's unscaled).
fn topk_values(a: &datafusion::arrow::array::ArrayRef) -> Option<Vec<Option<i128>>> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{
        DataType, Decimal128Type, Int64Type, TimeUnit, TimestampMillisecondType,
    };
    Some(match a.data_type() {
        DataType::Int64 => a
            .as_primitive::<Int64Type>()
            .iter()
            .map(|v| v.map(i128::from))
            .collect(),
        DataType::Timestamp(TimeUnit::Millisecond, _) => a
            .as_primitive::<TimestampMillisecondType>()
            .iter()
            .map(|v| v.map(i128::from))
            .collect(),
        DataType::Decimal128(_, _) => a.as_primitive::<Decimal128Type>().iter().collect(),
        _ => return None,
    })
}

/// Format batches as rows of strings (timestamps as `YYYY-MM-DD HH:MM:SS.mmm`).
pub fn format_rows(batches: &[RecordBatch]) -> Result<Vec<Vec<Option<String>>>, QueryError> {
    let opts = FormatOptions::default()
        .with_timestamp_format(Some(TIMESTAMP_FORMAT))
        .with_timestamp_tz_format(Some(TIMESTAMP_FORMAT));
    let mut rows = Vec::new();
    for b in batches {
        let fmts = b
            .columns()
            .iter()
            .map(|a| ArrayFormatter::try_new(a.as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| QueryError::Engine(e.to_string()))?;
        for r in 0..b.num_rows() {
            rows.push(
                b.columns()
                    .iter()
                    .zip(&fmts)
                    .map(|(a, f)| {
                        if a.is_null(r) {
                            return None;
                        }
                        // Decimals print as Insights does: 42, 12.5 (not 42.0).
                        if let Some(x) = a.as_any().downcast_ref::<Float64Array>() {
                            return Some(format!("{}", x.value(r)));
                        }
                        Some(f.value(r).to_string())
                    })
                    .collect(),
            );
        }
    }
    Ok(rows)
}
