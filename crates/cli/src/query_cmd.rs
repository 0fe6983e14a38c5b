//! `logbook query` and `logbook import`: the log group store read (and filled) straight
//! from the data folder, without a running server.

use anyhow::{bail, Context};
use logbook_journal::RealDisk;
use logbook_query::{Engine, Language, QueryRequest, QueryResult};
use logbook_store::Store;
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Open the store read-only and add the records still only in the journal (the tail a
/// running server holds in memory), so a query sees every committed record.
pub fn open_for_query(config: &logbook_server::Config) -> anyhow::Result<Arc<Store>> {
    let data_dir = &config.data_dir;
    let keys = Arc::new(config.keyring().map_err(anyhow::Error::msg)?);
    let store = Store::open_read_only(data_dir.join("store"), keys.clone())?;
    store.set_body_retention(config.body_retention.clone())?;
    let mut chunk = Vec::new();
    let journal = data_dir.join("journal");
    if journal.exists() {
        logbook_journal::scan(&journal, &keys, store.next_seq(), |e| {
            chunk.push(e);
            if chunk.len() >= 4096 {
                store.add_entries(&chunk);
                chunk.clear();
            }
        })?;
        store.add_entries(&chunk);
    }
    Ok(Arc::new(store))
}

/// Run a query and print it.
#[allow(clippy::too_many_arguments)]
pub fn query(
    config: &logbook_server::Config,
    groups: Vec<String>,
    start_ms: i64,
    end_ms: i64,
    sql: bool,
    format: &str,
    limit: usize,
    text: &str,
) -> anyhow::Result<()> {
    let store = open_for_query(config)?;
    let archive = match config.buckets.get(&config.archive_bucket) {
        Some(spec) => Some(
            logbook_bucket::Bucket::open(&config.archive_bucket, spec, RealDisk::shared())?.store(),
        ),
        None => None,
    };
    let engine = Engine::new(store, archive);
    let req = QueryRequest {
        groups,
        start_ms,
        end_ms,
        query: text.to_string(),
        language: if sql {
            Language::Sql
        } else {
            Language::Insights
        },
        limit,
        after_seq: 0,
        content: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start runtime")?;
    let r = rt.block_on(engine.run(&req))?;
    let mut out = std::io::stdout().lock();
    match format {
        "json" => print_json(&r, &mut out)?,
        "csv" => print_csv(&r, &mut out)?,
        _ => print_table(&r, &mut out)?,
    }
    out.flush()?;
    Ok(())
}

fn print_json(r: &QueryResult, out: &mut impl Write) -> anyhow::Result<()> {
    for row in &r.rows {
        let obj: serde_json::Map<String, serde_json::Value> = r
            .columns
            .iter()
            .zip(row)
            .map(|(c, v)| {
                (
                    c.clone(),
                    v.clone()
                        .map_or(serde_json::Value::Null, serde_json::Value::String),
                )
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Object(obj))?;
    }
    Ok(())
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn print_csv(r: &QueryResult, out: &mut impl Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "{}",
        r.columns
            .iter()
            .map(|c| csv_cell(c))
            .collect::<Vec<_>>()
            .join(",")
    )?;
    for row in &r.rows {
        let cells: Vec<String> = row
            .iter()
            .map(|v| csv_cell(v.as_deref().unwrap_or("")))
            .collect();
        writeln!(out, "{}", cells.join(","))?;
    }
    Ok(())
}

/// Cells wider than this are cut (use --format json for whole values).
const MAX_CELL: usize = 60;

fn cut(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() > MAX_CELL {
        let mut t: String = one_line.chars().take(MAX_CELL - 1).collect();
        t.push('…');
        t
    } else {
        one_line
    }
}

fn print_table(r: &QueryResult, out: &mut impl Write) -> anyhow::Result<()> {
    let cells: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|v| cut(v.as_deref().unwrap_or("")))
                .collect()
        })
        .collect();
    let mut w: Vec<usize> = r.columns.iter().map(|c| c.chars().count()).collect();
    for row in &cells {
        for (i, c) in row.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.chars().count());
            }
        }
    }
    let line = |vals: &[String]| -> String {
        vals.iter()
            .zip(&w)
            .map(|(v, n)| format!("{v:<n$}"))
            .collect::<Vec<_>>()
            .join(" │ ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(&r.columns))?;
    writeln!(
        out,
        "{}",
        w.iter()
            .map(|n| "─".repeat(*n))
            .collect::<Vec<_>>()
            .join("─┼─")
    )?;
    for row in &cells {
        writeln!(out, "{}", line(row))?;
    }
    writeln!(
        out,
        "({} row{}; {} records scanned, {:.1} MB)",
        r.rows.len(),
        if r.rows.len() == 1 { "" } else { "s" },
        r.stats.records_scanned,
        r.stats.bytes_scanned as f64 / 1e6
    )?;
    Ok(())
}

/// Where an import reads from: a folder, or `s3://bucket/prefix` of a declared bucket
/// (local or remote), as an object store and a prefix in it.
struct Source {
    store: Arc<dyn ObjectStore>,
    prefix: Option<StorePath>,
}

fn source(config: &logbook_server::Config, source: &str) -> anyhow::Result<Source> {
    if let Some(rest) = source.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let Some(spec) = config.buckets.get(bucket) else {
            bail!("bucket {bucket:?} is not declared in the configuration ([[buckets]]); Logbook reads s3:// sources from its own buckets");
        };
        if prefix.split('/').any(|s| s == "..") {
            bail!("the prefix may not contain '..'");
        }
        let store = logbook_bucket::Bucket::open(bucket, spec, RealDisk::shared())?.store();
        let prefix = prefix.trim_matches('/');
        return Ok(Source {
            store,
            prefix: (!prefix.is_empty()).then(|| StorePath::from(prefix)),
        });
    }
    let p = PathBuf::from(source);
    if !p.is_dir() {
        bail!("{source}: not a folder");
    }
    Ok(Source {
        store: Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&p)?),
        prefix: None,
    })
}

/// Replace `inputBodyS3Path`/`outputBodyS3Path` offloads by the bodies they point to, when
/// the object is under `bucket_root`.
fn follow_offloads(line: &str, src: &Source, rt: &tokio::runtime::Handle) -> Option<String> {
    memchr::memmem::find(line.as_bytes(), b"BodyS3Path\"")?;
    let mut v: serde_json::Value = serde_json::from_str(line).ok()?;
    let mut changed = false;
    for (sec, path_key, body_key) in [
        ("input", "inputBodyS3Path", "inputBodyJson"),
        ("output", "outputBodyS3Path", "outputBodyJson"),
    ] {
        let Some(obj) = v.get_mut(sec).and_then(|s| s.as_object_mut()) else {
            continue;
        };
        if obj.contains_key(body_key) {
            continue;
        }
        let Some(uri) = obj.get(path_key).and_then(|p| p.as_str()) else {
            continue;
        };
        let Some(key) = uri
            .strip_prefix("s3://")
            .and_then(|r| r.split_once('/'))
            .map(|(_, k)| k)
        else {
            continue;
        };
        if key.split('/').any(|s| s == "..") {
            continue;
        }
        let got = rt.block_on(async { src.store.get(&StorePath::from(key)).await?.bytes().await });
        let Ok(bytes) = got else {
            continue;
        };
        let mut s = String::new();
        if flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_string(&mut s)
            .is_err()
        {
            continue;
        }
        if let Ok(body) = serde_json::from_str::<serde_json::Value>(&s) {
            obj.insert(body_key.into(), body);
            changed = true;
        }
    }
    changed.then(|| v.to_string())
}

/// An import that stopped: what happened to what it did, what to do, and (a full disk)
/// why. Records named in the manifest before the failure stay; the files written since
/// are orphans the next open removes; a re-run skips what is present.
fn stopped_import(
    e: anyhow::Error,
    group: &str,
    committed: u64,
    data_dir: &std::path::Path,
) -> anyhow::Error {
    let full = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull)
    });
    let why = if full {
        format!(
            "the disk holding {} is full (an import takes about 1.8 KB of disk a record \
             until the first `logbook serve` compacts closed days to about 0.9 KB); free \
             some and ",
            data_dir.display()
        )
    } else {
        String::new()
    };
    e.context(format!(
        "the import into log group {group} stopped: {committed} records were stored before \
         it and stay, what it wrote since is removed when `logbook serve` or an import next \
         opens the store; {why}run the same import again to bring in the rest (records \
         already present are skipped)"
    ))
}

/// The request ids an import has seen (in the group, or earlier in the import), each as
/// two differently keyed 64-bit SipHashes: 16 bytes an id instead of a `String` (about
/// 90 bytes with its allocation; 0.9 GB at 10,000,000 records). Two different ids take
/// the same key with a chance of about n² / 2^129 (below 10^-24 at 10^7 ids), and the
/// keys are random per process, so no input can be made to collide on purpose.
#[derive(Default)]
struct SeenIds {
    keys: (std::hash::RandomState, std::hash::RandomState),
    set: HashSet<u128, std::hash::BuildHasherDefault<KeyHasher>>,
}

impl SeenIds {
    /// Note `id`; false when it was seen before.
    fn insert(&mut self, id: &str) -> bool {
        use std::hash::BuildHasher;
        let k = u128::from(self.keys.0.hash_one(id)) << 64 | u128::from(self.keys.1.hash_one(id));
        self.set.insert(k)
    }
}

/// The set's hasher: its keys are already keyed hashes, so their low bits serve.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, k: u128) {
        self.0 = k as u64;
    }
}

/// What a worker tells the import's thread about one object it did.
struct Progress {
    path: String,
    bytes: u64,
    lines: u64,
    errors: Vec<(usize, String)>,
    recognised: bool,
    /// Records already in the group (or earlier in this import).
    dups: u64,
}

/// What was read of one object, and the problems found in it.
struct FileRows {
    path: String,
    bytes: u64,
    lines: u64,
    errors: Vec<(usize, String)>,
    /// Is the object in one of the layouts import reads?
    recognised: bool,
}

/// The layouts `logbook import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Bedrock's S3 delivery: `.../BedrockModelInvocationLogs/.../*.json.gz`, one record per
    /// line.
    Bedrock,
    /// A CloudWatch Logs export to S3 (`CreateExportTask`):
    /// `<prefix>/<task id>/<log stream>/NNNNNN.gz`, each line an ISO timestamp, a space,
    /// then the record.
    CloudWatchExport,
    /// What `aws logs filter-log-events` / `get-log-events` print: a JSON document with an
    /// `events` list whose `message`s are the records.
    CloudWatchJson,
}

/// What was looked for, for the error when nothing is found.
const LAYOUTS: &str = "Bedrock's S3 delivery (<prefix>/AWSLogs/<account>/BedrockModelInvocationLogs/<region>/YYYY/MM/DD/HH/*.json.gz), \
a CloudWatch Logs export to S3 (<prefix>/<task id>/<log stream>/NNNNNN.gz, lines \"<ISO time> <record>\"), \
and the JSON that `aws logs filter-log-events` or `get-log-events` prints (*.json with an \"events\" list)";

fn layout(key: &str) -> Option<Layout> {
    if key.split('/').any(|s| s == "data") || key.contains("/CloudTrail/") {
        return None;
    }
    if logbook_query::archive::is_record_object(key) {
        Some(Layout::Bedrock)
    } else if key.ends_with(".gz") {
        Some(Layout::CloudWatchExport)
    } else if key.ends_with(".json") {
        Some(Layout::CloudWatchJson)
    } else {
        None
    }
}

/// A CloudWatch export line without its leading timestamp (`2026-12-01T10:00:00.000Z {..}`).
fn strip_export_time(line: &str) -> &str {
    match line.split_once(' ') {
        Some((t, rest))
            if t.len() >= 10
                && t.as_bytes()[0].is_ascii_digit()
                && rest.trim_start().starts_with('{') =>
        {
            rest.trim_start()
        }
        _ => line,
    }
}

/// Parse one object: each record goes to `sink` as it is read (borrowed from the line,
/// so nothing of the object is held but the line being read). An error is the sink's
/// (the import stops); the object's own problems are in the result's `errors`.
fn parse_object(
    o: &ObjectMeta,
    src: &Source,
    rt: &tokio::runtime::Handle,
    gunzip: Option<&mut crate::gunzip::Gunzip>,
    sink: &mut dyn FnMut(logbook_store::Fields<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<FileRows> {
    let mut out = FileRows {
        path: o.location.to_string(),
        bytes: o.size,
        lines: 0,
        errors: Vec::new(),
        recognised: true,
    };
    let Some(kind) = layout(o.location.as_ref()) else {
        out.recognised = false;
        return Ok(out);
    };
    let got = rt.block_on(async { src.store.get(&o.location).await?.bytes().await });
    let bytes = match got {
        Ok(b) => b,
        Err(e) => {
            out.errors.push((0, e.to_string()));
            return Ok(out);
        }
    };
    let mut take = |n: usize, line: &str, out: &mut FileRows| -> anyhow::Result<()> {
        if line.trim().is_empty() {
            return Ok(());
        }
        out.lines += 1;
        let followed = follow_offloads(line, src, rt);
        match logbook_store::parse_fields(followed.as_deref().unwrap_or(line)) {
            Ok(r) if r.request_id().is_some() => sink(r)?,
            Ok(_) => out
                .errors
                .push((n + 1, "the record has no requestId".into())),
            Err(e) => out.errors.push((n + 1, e.to_string())),
        }
        Ok(())
    };
    match kind {
        Layout::Bedrock | Layout::CloudWatchExport => {
            // Decompressed whole when it can be (twice as fast); streamed otherwise, and
            // read alike either way.
            let whole = gunzip.and_then(|g| g.whole(&bytes, crate::gunzip::CAP));
            let mut lines = match whole {
                Some(text) => logbook_query::archive::LineReader::plain(text),
                None => logbook_query::archive::LineReader::new(&bytes),
            };
            let mut next = 0;
            while let Some(line) = lines.next_line() {
                // The line's index in the object (its number less one).
                let n = next;
                next += 1;
                match line {
                    Ok(l) if kind == Layout::CloudWatchExport => {
                        take(n, strip_export_time(l), &mut out)?
                    }
                    Ok(l) => take(n, l, &mut out)?,
                    // Reported as malformed; the lines after it are still read.
                    Err(e) if logbook_query::archive::is_too_long(&e) => {
                        out.errors.push((n + 1, e.to_string()))
                    }
                    Err(e) => {
                        out.errors.push((n + 1, e.to_string()));
                        break;
                    }
                }
            }
        }
        Layout::CloudWatchJson => {
            let events = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("events").and_then(|e| e.as_array()).cloned());
            let Some(events) = events else {
                // Some other JSON file: not a layout we read.
                out.recognised = false;
                return Ok(out);
            };
            for (n, e) in events.iter().enumerate() {
                match e.get("message").and_then(|m| m.as_str()) {
                    Some(m) => take(n, m, &mut out)?,
                    None => out.errors.push((n + 1, "an event has no message".into())),
                }
            }
        }
    }
    Ok(out)
}

/// Import Bedrock invocation logs into a log group.
pub fn import(config: &logbook_server::Config, source: &str, group: &str) -> anyhow::Result<()> {
    let src = self::source(config, source)?;
    let _lock = logbook_server::app::DataLock::acquire(&config.data_dir)?;
    let keys = Arc::new(config.keyring().map_err(anyhow::Error::msg)?);
    let store = match Store::open_on(logbook_store::RealDisk::shared(), config.data_dir.join("store"), keys) {
        Ok(s) => s,
        Err(logbook_store::StoreError::Locked(p)) => bail!(
            "the log group store {} is in use by a running `logbook serve`; stop it first (imports write the store directly)",
            p.display()
        ),
        Err(e) => return Err(e.into()),
    };
    // Created with the first records: an import that finds nothing changes nothing.
    let mut exists = store.has_group(group);
    let mut ensure_group = |store: &Store| -> anyhow::Result<()> {
        if !exists {
            store.create_group(group)?;
            eprintln!("created log group {group}");
            exists = true;
        }
        Ok(())
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut files: Vec<ObjectMeta> = rt
        .block_on(async {
            use futures::TryStreamExt;
            src.store
                .list(src.prefix.as_ref())
                .try_filter(|m| std::future::ready(layout(m.location.as_ref()).is_some()))
                .try_collect::<Vec<_>>()
                .await
        })
        .with_context(|| format!("listing {source}"))?;
    files.sort_by(|a, b| a.location.cmp(&b.location));
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    let mut seen = SeenIds::default();
    if store.has_group(group) {
        store.for_each_request_id(group, |id| {
            seen.insert(id);
        })?;
    }
    let started = Instant::now();
    let (mut added, mut dups, mut bad, mut done_bytes, mut read) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut recognised = 0usize;
    let mut last_report = Instant::now();
    let mut err = std::io::stderr();
    let report = |read: u64, done_bytes: u64, final_: bool, err: &mut std::io::Stderr| {
        let secs = started.elapsed().as_secs_f64().max(1e-6);
        let rate = read as f64 / secs;
        let frac = if total_bytes == 0 {
            1.0
        } else {
            done_bytes as f64 / total_bytes as f64
        };
        let eta = if frac > 0.0 { secs / frac - secs } else { 0.0 };
        let width = 30;
        let filled = ((frac * width as f64) as usize).min(width);
        let _ = write!(
            err,
            "\r[{}{}] {read} records, {:.1}/{:.1} MB, {:.0} records/s, ETA {:.0}s   {}",
            "#".repeat(filled),
            "-".repeat(width - filled),
            done_bytes as f64 / 1e6,
            total_bytes as f64 / 1e6,
            rate,
            eta.max(0.0),
            if final_ { "\n" } else { "" }
        );
        let _ = err.flush();
    };
    // Workers take objects in turn and do all of it: decompress, parse, de-duplicate (one
    // shared set of request ids, held briefly), and write their own rows to Parquet once
    // they hold WRITE_AT bytes of them. So the cores stay busy without a thread that
    // gathers every row, and the import holds WRITE_AT of rows and a chunk being parsed
    // per worker instead of 65,536 records (about 1.3 GB). One worker more than the
    // cores: the files are written around the page cache, and a worker waits for the
    // disk while its chunks go out (about 6 % of the time with one worker per core);
    // meanwhile the extra one has the core (1M benchmark records: 13.5-14.6 s against
    // 15.9 s, 80 MB more held). What the workers wrote is named in the manifest here,
    // every COMMIT_EVERY files and at the end: a crash loses at most that much work (its
    // files are orphans the next open removes), never a record a re-import would not
    // bring back.
    const WRITE_AT: usize = 48 << 20;
    const COMMIT_EVERY: usize = 64;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen = std::sync::Mutex::new(seen);
    let written = std::sync::Mutex::new(logbook_store::ImportedFiles::default());
    let group_made = std::sync::Mutex::new(&mut ensure_group);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Progress>(64);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
    let commit = |store: &Store| -> anyhow::Result<u64> {
        let files = std::mem::take(&mut *written.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(store.commit_import(group, files)?)
    };
    let scoped = std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for _ in 0..workers {
            let tx = tx.clone();
            let (files, next, src, stop, seen) = (&files, &next, &src, &stop, &seen);
            let (written, group_made, store) = (&written, &group_made, &store);
            let handle = rt.handle().clone();
            handles.push(scope.spawn(move || -> anyhow::Result<()> {
                // The records taken and not yet written, as Arrow columns by partition (a
                // record's values are copied once, from its line into its batch).
                let mut parts = logbook_store::ImportBuffer::new();
                let mut gunzip = crate::gunzip::Gunzip::new();
                let write = |parts: logbook_store::ImportBuffer| -> anyhow::Result<()> {
                    if parts.is_empty() {
                        return Ok(());
                    }
                    (*group_made.lock().unwrap_or_else(|p| p.into_inner()))(store)?;
                    let out = store.write_import_buffer(group, parts, 1)?;
                    written
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .append(out);
                    Ok(())
                };
                let r = (|| -> anyhow::Result<()> {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(f) = files.get(i) else { break };
                        let mut dups = 0u64;
                        let mut absorb = |r: logbook_store::Fields<'_>| -> anyhow::Result<()> {
                            let Some(id) = r.request_id() else {
                                return Ok(()); // parse_object passes only records with one
                            };
                            if !seen.lock().unwrap_or_else(|p| p.into_inner()).insert(id) {
                                dups += 1;
                                return Ok(());
                            }
                            parts.append(&r)?;
                            if parts.bytes() >= WRITE_AT {
                                write(parts.take())?;
                            }
                            Ok(())
                        };
                        let fr = parse_object(f, src, &handle, gunzip.as_mut(), &mut absorb)?;
                        let p = Progress {
                            path: fr.path,
                            bytes: fr.bytes,
                            lines: fr.lines,
                            errors: fr.errors,
                            recognised: fr.recognised,
                            dups,
                        };
                        if tx.send(p).is_err() {
                            break;
                        }
                    }
                    write(parts)
                })();
                if r.is_err() {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                r
            }));
        }
        drop(tx);
        let mut failed = None;
        for p in rx {
            if p.recognised {
                recognised += 1;
            }
            for (line_no, e) in &p.errors {
                let _ = writeln!(err, "\n{}:{line_no}: {e}", p.path);
                bad += 1;
            }
            read += p.lines;
            dups += p.dups;
            done_bytes += p.bytes;
            if written.lock().unwrap_or_else(|p| p.into_inner()).len() >= COMMIT_EVERY {
                match commit(&store) {
                    Ok(n) => added += n,
                    Err(e) => {
                        // The workers stop at their next object (and at this loop's end,
                        // their progress has nowhere to go).
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        failed = Some(e);
                        break;
                    }
                }
            }
            if last_report.elapsed().as_millis() >= 500 {
                report(read, done_bytes, false, &mut err);
                last_report = Instant::now();
            }
        }
        for h in handles {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("an import worker panicked")));
            if let Err(e) = r {
                failed.get_or_insert(e);
            }
        }
        failed.map_or(Ok(()), Err)
    });
    let last = scoped.and_then(|()| commit(&store));
    let added = match last {
        Ok(n) => added + n,
        Err(e) => {
            // Below the progress line, not on it.
            let _ = writeln!(err);
            return Err(stopped_import(e, group, added, &config.data_dir));
        }
    };
    report(read, done_bytes, true, &mut err);
    if recognised == 0 || read == 0 {
        bail!(
            "no invocation records found in {source} ({} object(s) looked at); looked for {LAYOUTS}",
            files.len()
        );
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "imported {added} records into {group} from {recognised} objects in {secs:.2}s ({:.0} records/s); {dups} already present, {bad} malformed",
        added as f64 / secs.max(1e-6)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// A full disk is named with the folder and what to do; any stop says what stays and
    /// that a re-run resumes.
    #[test]
    fn a_stopped_import_says_what_stays_and_what_to_do() {
        let dir = std::path::Path::new("/data/logbook");
        let full = anyhow::Error::from(std::io::Error::from_raw_os_error(28));
        let text = format!("{:#}", super::stopped_import(full, "bench", 52_782, dir));
        assert!(
            text.contains("log group bench stopped: 52782 records were stored"),
            "{text}"
        );
        assert!(
            text.contains("the disk holding /data/logbook is full"),
            "{text}"
        );
        assert!(text.contains("run the same import again"), "{text}");
        assert!(text.ends_with("(os error 28)"), "{text}");
        let other = anyhow::anyhow!("parquet: bad magic");
        let text = format!("{:#}", super::stopped_import(other, "g", 0, dir));
        assert!(!text.contains("is full"), "{text}");
        assert!(text.contains("0 records were stored") && text.ends_with("bad magic"));
    }
}
