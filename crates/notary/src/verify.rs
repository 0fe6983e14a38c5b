//! The offline verifier: reads a bucket (local or S3, through its object store), checks
//! every checkpoint's signature and chain, every object each lists (present, same SHA-256,
//! same number of lines), recomputes each log's Merkle tree from the lines and compares
//! the root at every checkpoint, and looks for log objects no checkpoint lists. Prints
//! lines in the manner of CloudTrail's `validate-logs`. Also builds and checks proofs.

use crate::checkpoint::{parse_hash, Checkpoint, ObjectEntry, PREFIX};
use crate::keys::PublicKey;
use crate::merkle::{self, leaf_hash, Frontier, Hash};
use crate::NotaryError;
use flate2::read::GzDecoder;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::Arc;

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Public keys (several after a rotation).
    pub keys: Vec<PublicKey>,
    /// Only objects at or after this time (Unix ms); the trees are then not recomputed.
    pub start_ms: Option<u64>,
    /// Only objects before this time (Unix ms).
    pub end_ms: Option<u64>,
    /// Checkpoints the auditor kept (e.g. from an earlier run): the bucket must still hold
    /// a tree that extends each of them.
    pub trusted: Vec<Checkpoint>,
    /// Print a line for valid objects too.
    pub verbose: bool,
    /// The current time (Unix ms), to say when a checkpoint is overdue.
    pub now_ms: u64,
    /// Where a lifecycle rule moved old objects (same keys): a log object missing from
    /// the bucket is looked for there. Checkpoints never move.
    pub cold: Option<Arc<dyn ObjectStore>>,
}

/// The outcome.
#[derive(Debug, Default)]
pub struct Report {
    /// Lines to print, in order.
    pub lines: Vec<String>,
    /// Problems found (verify exits non-zero when any).
    pub findings: usize,
    /// Checkpoints read / valid.
    pub checkpoints: (usize, usize),
    /// Listed objects checked / valid.
    pub objects: (usize, usize),
    /// Leaves (records and trail events) checked.
    pub leaves: u64,
    /// Objects delivered after the newest checkpoint (not covered yet).
    pub pending: usize,
}

impl Report {
    fn finding(&mut self, line: String) {
        self.findings += 1;
        self.lines.push(line);
    }
}

/// What kind of object a key is, for the logs a checkpoint can cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Bedrock invocation log object: one record per line.
    Records,
    /// An offloaded body (no lines).
    Data,
    /// CloudTrail object: `{"Records": [...]}`.
    Trail,
}

fn kind_of(key: &str) -> Option<Kind> {
    if key.contains("/BedrockModelInvocationLogs/") {
        if key.contains("/data/") {
            Some(Kind::Data)
        } else if key.ends_with(".json.gz") {
            Some(Kind::Records)
        } else {
            None
        }
    } else if key.contains("/CloudTrail/") && key.ends_with(".json.gz") {
        Some(Kind::Trail)
    } else {
        None
    }
}

fn ms(y: i32, mo: u8, d: u8, h: u8, mi: u8, s: u8, milli: u16) -> Option<u64> {
    let date = time::Date::from_calendar_date(y, time::Month::try_from(mo).ok()?, d).ok()?;
    let t = date.with_hms_milli(h, mi, s, milli).ok()?.assume_utc();
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

fn num<T: std::str::FromStr>(s: &str, a: usize, b: usize) -> Option<T> {
    s.get(a..b)?.parse().ok()
}

/// The time span `[from, to)` a key's name places the object in (Unix ms).
fn key_time(key: &str, kind: Kind) -> Option<(u64, u64)> {
    let name = key.rsplit('/').next()?;
    match kind {
        Kind::Records => {
            // YYYYMMDDTHHMMSSmmmZ_<hex>.json.gz
            let t = ms(
                num(name, 0, 4)?,
                num(name, 4, 6)?,
                num(name, 6, 8)?,
                num(name, 9, 11)?,
                num(name, 11, 13)?,
                num(name, 13, 15)?,
                num(name, 15, 18)?,
            )?;
            Some((t, t + 1))
        }
        Kind::Trail => {
            // <acct>_CloudTrail_<region>_YYYYMMDDTHHMMZ_<hex>.json.gz
            let parts: Vec<&str> = name.split('_').collect();
            let s = parts.get(parts.len().checked_sub(2)?)?;
            let t = ms(
                num(s, 0, 4)?,
                num(s, 4, 6)?,
                num(s, 6, 8)?,
                num(s, 9, 11)?,
                num(s, 11, 13)?,
                0,
                0,
            )?;
            Some((t, t + 60_000))
        }
        Kind::Data => {
            // .../YYYY/MM/DD/HH/data/<name>
            let segs: Vec<&str> = key.split('/').collect();
            let i = segs.iter().rposition(|s| *s == "data")?;
            let p = |k: usize| {
                segs.get(i.checked_sub(k)?)
                    .and_then(|s| s.parse::<u32>().ok())
            };
            let t = ms(p(4)? as i32, p(3)? as u8, p(2)? as u8, p(1)? as u8, 0, 0, 0)?;
            Some((t, t + 3_600_000))
        }
    }
}

/// The most an object's text may take once decompressed. Delivery writes objects of
/// `[archive] max_object_bytes` (5 MiB by default) plus at most one record; bodies over
/// 100 KB are offloaded to their own objects, which are not read as text.
#[cfg(not(test))]
pub const MAX_OBJECT_TEXT: usize = 1 << 30;
/// Small under test, so the bound is cheap to exercise.
#[cfg(test)]
pub const MAX_OBJECT_TEXT: usize = 1 << 20;

/// Call `f` with each leaf of an object, in order: its exact lines (records) or events
/// (trail), borrowed from one decompressed buffer (no copy per line).
fn each_line(bytes: &[u8], kind: Kind, mut f: impl FnMut(&[u8])) -> Result<(), String> {
    if kind == Kind::Data {
        return Ok(());
    }
    // gzip's trailer holds the uncompressed size (mod 2^32): one allocation.
    let hint = bytes
        .len()
        .checked_sub(4)
        .and_then(|i| bytes.get(i..))
        .and_then(|t| <[u8; 4]>::try_from(t).ok())
        .map_or(0, |t| u32::from_le_bytes(t) as usize);
    let mut text = Vec::with_capacity(hint.min(MAX_OBJECT_TEXT));
    // An object planted in the bucket could be a gzip bomb: read at most the limit (and
    // one byte more, to know), never what it claims.
    GzDecoder::new(bytes)
        .take(MAX_OBJECT_TEXT as u64 + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("not a gzip object ({e})"))?;
    if text.len() > MAX_OBJECT_TEXT {
        return Err(format!(
            "it decompresses to more than {} MiB, far over what delivery writes (refused unread: a gzip bomb?)",
            MAX_OBJECT_TEXT >> 20
        ));
    }
    match kind {
        Kind::Data => {}
        Kind::Records => {
            if !text.is_empty() && text.last() != Some(&b'\n') {
                return Err("its last line is not whole".into());
            }
            text.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .for_each(f);
        }
        Kind::Trail => {
            #[derive(serde::Deserialize)]
            struct Obj<'a> {
                #[serde(rename = "Records", borrow)]
                records: Vec<&'a RawValue>,
            }
            let o: Obj<'_> = serde_json::from_slice(&text)
                .map_err(|e| format!("not a CloudTrail object ({e})"))?;
            o.records.iter().for_each(|r| f(r.get().as_bytes()));
        }
    }
    Ok(())
}

/// One log (one node's `records` or `trail`) as the bucket holds it.
#[derive(Debug, Default)]
struct Log {
    checkpoints: Vec<(String, Checkpoint)>,
    objects: BTreeMap<String, ObjectEntry>,
    leaves: Vec<Option<Hash>>,
    /// Leaf index -> (object key, line) for what a proof search found.
    found: Option<(u64, String, Vec<u8>)>,
}

/// Everything read from a bucket.
#[derive(Debug, Default)]
struct Bucket {
    logs: BTreeMap<(String, String), Log>,
    /// Log-space objects and their kinds.
    all: BTreeMap<String, Kind>,
}

async fn get(store: &Arc<dyn ObjectStore>, key: &str) -> Result<Option<bytes::Bytes>, NotaryError> {
    let path = object_store::path::Path::from(key);
    match store.get(&path).await {
        Ok(r) => r
            .bytes()
            .await
            .map(Some)
            .map_err(|e| NotaryError::Bucket(format!("{key}: {e}"))),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(NotaryError::Bucket(format!("{key}: {e}"))),
    }
}

/// What a search for one record or event looks for.
#[derive(Debug, Clone)]
enum Find {
    None,
    /// A record's `requestId` or a trail event's `eventID`.
    Id(String),
}

impl Find {
    fn matches(&self, line: &[u8]) -> bool {
        let Find::Id(id) = self else {
            return false;
        };
        let quoted = format!("\"{id}\"");
        if !line.windows(quoted.len()).any(|w| w == quoted.as_bytes()) {
            return false;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            return false;
        };
        v.get("requestId").and_then(|x| x.as_str()) == Some(id.as_str())
            || v.get("eventID").and_then(|x| x.as_str()) == Some(id.as_str())
    }
}

type Digested = (String, Result<Vec<Hash>, String>, Option<(usize, Vec<u8>)>);

/// An object's SHA-256, its leaves' hashes, and the line `find` looks for.
fn digest(bytes: &[u8], kind: Kind, find: &Find) -> Digested {
    let sha = hex::encode(Sha256::digest(bytes));
    let mut hashes = Vec::new();
    let mut hit = None;
    let r = each_line(bytes, kind, |l| {
        if hit.is_none() && find.matches(l) {
            hit = Some((hashes.len(), l.to_vec()));
        }
        hashes.push(leaf_hash(l));
    });
    (sha, r.map(|()| hashes), hit)
}

/// Read the checkpoints (verifying each) and list the log-space objects.
async fn load(
    store: &Arc<dyn ObjectStore>,
    bucket: &str,
    keys: &[PublicKey],
    report: &mut Report,
) -> Result<Bucket, NotaryError> {
    let mut b = Bucket::default();
    let listed: Vec<object_store::ObjectMeta> = store
        .list(None)
        .try_collect()
        .await
        .map_err(|e| NotaryError::Bucket(format!("listing {bucket}: {e}")))?;
    let mut cps = Vec::new();
    for m in listed {
        let k = m.location.as_ref().to_string();
        if k.starts_with(PREFIX) {
            cps.push(k);
        } else if let Some(kind) = kind_of(&k) {
            b.all.insert(k, kind);
        }
    }
    for k in cps {
        report.checkpoints.0 += 1;
        let Some(bytes) = get(store, &k).await? else {
            report.finding(format!("Checkpoint s3://{bucket}/{k}\tINVALID: not found"));
            continue;
        };
        let c = match Checkpoint::parse(&bytes) {
            Ok(c) => c,
            Err(e) => {
                report.finding(format!("Checkpoint s3://{bucket}/{k}\tINVALID: {e}"));
                continue;
            }
        };
        if let Err(e) = c.verify(keys) {
            report.finding(format!("Checkpoint s3://{bucket}/{k}\tINVALID: {e}"));
            continue;
        }
        let expected = crate::checkpoint::checkpoint_key(&c);
        if expected != k {
            report.finding(format!(
                "Checkpoint s3://{bucket}/{k}\tINVALID: its contents belong at {expected}"
            ));
            continue;
        }
        report.checkpoints.1 += 1;
        b.logs
            .entry((c.node.clone(), c.log.clone()))
            .or_default()
            .checkpoints
            .push((k, c));
    }
    Ok(b)
}

/// Check each log's checkpoints among themselves: one root per size, each previous tree
/// present, every listed object listed alike.
fn check_chains(b: &mut Bucket, bucket: &str, report: &mut Report) {
    for ((node, log), l) in b.logs.iter_mut() {
        l.checkpoints.sort_by_key(|c| (c.1.tree_size, c.1.time_ms));
        let mut roots: BTreeMap<u64, String> = BTreeMap::new();
        for (k, c) in &l.checkpoints {
            match roots.get(&c.tree_size) {
                Some(r) if *r != c.root_hash => report.finding(format!(
                    "Checkpoint s3://{bucket}/{k}\tINVALID: log {node}/{log} has two different trees of size {}",
                    c.tree_size
                )),
                _ => {
                    roots.insert(c.tree_size, c.root_hash.clone());
                }
            }
        }
        for (k, c) in &l.checkpoints {
            if let Some(p) = &c.previous {
                if p.tree_size > c.tree_size || roots.get(&p.tree_size) != Some(&p.root_hash) {
                    report.finding(format!(
                        "Checkpoint s3://{bucket}/{k}\tINVALID: the checkpoint before it (tree size {}) is missing",
                        p.tree_size
                    ));
                }
            }
            // No previous: it covers the log from leaf 0 (the first, or one written again
            // after a crash took back the state that said the first was written).
            for o in &c.objects {
                match l.objects.get(&o.key) {
                    Some(prev) if prev != o => report.finding(format!(
                        "Checkpoint s3://{bucket}/{k}\tINVALID: lists {} unlike an earlier checkpoint",
                        o.key
                    )),
                    Some(_) => {}
                    None => {
                        l.objects.insert(o.key.clone(), o.clone());
                    }
                }
            }
        }
        let size = l.checkpoints.last().map_or(0, |c| c.1.tree_size);
        l.leaves = vec![None; usize::try_from(size).unwrap_or(0)];
    }
}

fn in_range(opts: &Options, span: Option<(u64, u64)>) -> bool {
    let Some((from, to)) = span else {
        return opts.start_ms.is_none() && opts.end_ms.is_none();
    };
    opts.start_ms.is_none_or(|s| to > s) && opts.end_ms.is_none_or(|e| from < e)
}

/// Fetch and check every listed object; fill the logs' leaves.
async fn check_objects(
    store: &Arc<dyn ObjectStore>,
    b: &mut Bucket,
    bucket: &str,
    opts: &Options,
    find: &Find,
    report: &mut Report,
) -> Result<(), NotaryError> {
    let mut work = Vec::new();
    for (id, l) in &b.logs {
        for o in l.objects.values() {
            let Some(kind) = kind_of(&o.key) else {
                continue;
            };
            if in_range(opts, key_time(&o.key, kind)) || matches!(find, Find::Id(_)) {
                work.push((id.clone(), o.clone(), kind));
            }
        }
    }
    // Objects are fetched concurrently (I/O) and digested by one worker thread per core
    // (decompression and hashing are the cost) while the next ones are read.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, bytes::Bytes, Kind)>(workers * 2);
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let (rtx, rrx) = std::sync::mpsc::channel::<(usize, Digested)>();
    let pool: Vec<_> = (0..workers)
        .map(|_| {
            let rx = rx.clone();
            let rtx = rtx.clone();
            let find = find.clone();
            std::thread::spawn(move || loop {
                let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok((i, bytes, kind)) = job else {
                    break;
                };
                if rtx.send((i, digest(&bytes, kind, &find))).is_err() {
                    break;
                }
            })
        })
        .collect();
    drop(rtx);
    let mut slots: Vec<Option<Option<Digested>>> = work.iter().map(|_| None).collect();
    let mut fetched = futures::stream::iter(work.iter().enumerate().map(|(i, (_, o, kind))| {
        let store = store.clone();
        let cold = opts.cold.clone();
        let key = o.key.clone();
        let kind = *kind;
        async move {
            let got = match (get(&store, &key).await, &cold) {
                (Ok(None), Some(cold)) => get(cold, &key).await,
                (got, _) => got,
            };
            (i, kind, got)
        }
    }))
    .buffered(16);
    let mut failed = None;
    while let Some((i, kind, got)) = fetched.next().await {
        match got {
            Ok(Some(bytes)) => {
                if tx.send((i, bytes, kind)).is_err() {
                    failed = Some(NotaryError::Bucket("a verifier thread stopped".into()));
                    break;
                }
            }
            Ok(None) => slots[i] = Some(None),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(tx);
    drop(fetched);
    for (i, d) in rrx {
        slots[i] = Some(Some(d));
    }
    for h in pool {
        let _ = h.join();
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let mut results = Vec::new();
    for ((id, o, _), slot) in work.into_iter().zip(slots) {
        let checked: Result<Option<Digested>, NotaryError> = match slot {
            Some(x) => Ok(x),
            None => Err(NotaryError::Bucket(format!("{}: not digested", o.key))),
        };
        results.push((id, o, checked));
    }
    for (id, o, checked) in results {
        report.objects.0 += 1;
        let at = format!("s3://{bucket}/{}", o.key);
        let (sha, hashes, hit) = match checked? {
            None => {
                report.finding(format!("Log object {at}\tINVALID: not found"));
                continue;
            }
            Some(x) => x,
        };
        if sha != o.sha256 {
            let why = match &hashes {
                Ok(h) if h.len() as u64 != o.leaf_count() => format!(
                    "hash value doesn't match (it holds {} lines, the checkpoint says {})",
                    h.len(),
                    o.leaf_count()
                ),
                Ok(_) => "hash value doesn't match".to_string(),
                Err(e) => format!("hash value doesn't match; {e}"),
            };
            report.finding(format!("Log object {at}\tINVALID: {why}"));
            continue;
        }
        let Ok(hashes) = hashes else {
            report.finding(format!("Log object {at}\tINVALID: unreadable"));
            continue;
        };
        if hashes.len() as u64 != o.leaf_count() {
            report.finding(format!(
                "Log object {at}\tINVALID: holds {} lines, the checkpoint says {}",
                hashes.len(),
                o.leaf_count()
            ));
            continue;
        }
        let Some(l) = b.logs.get_mut(&id) else {
            continue;
        };
        let mut bad = None;
        for (i, h) in o.indices().zip(&hashes) {
            match l.leaves.get_mut(usize::try_from(i).unwrap_or(usize::MAX)) {
                Some(slot @ None) => *slot = Some(*h),
                Some(Some(_)) => bad = Some(format!("claims leaf {i}, which another object holds")),
                None => bad = Some(format!("claims leaf {i}, beyond the newest checkpoint")),
            }
        }
        if let Some(why) = bad {
            report.finding(format!("Log object {at}\tINVALID: {why}"));
            continue;
        }
        if let Some((line, text)) = hit {
            if let Some(index) = o.indices().nth(line) {
                l.found = Some((index, o.key.clone(), text));
            }
        }
        report.objects.1 += 1;
        report.leaves += hashes.len() as u64;
        if opts.verbose {
            report.lines.push(format!("Log object {at}\tvalid"));
        }
    }
    Ok(())
}

/// Recompute each log's root at each checkpoint (when every leaf was read).
fn check_roots(b: &Bucket, bucket: &str, report: &mut Report) {
    for ((node, log), l) in &b.logs {
        let mut f = Frontier::default();
        let mut leaves = l.leaves.iter();
        for (k, c) in &l.checkpoints {
            let mut complete = true;
            while f.size() < c.tree_size {
                match leaves.next() {
                    Some(Some(h)) => {
                        f.push(*h);
                    }
                    _ => {
                        complete = false;
                        break;
                    }
                }
            }
            if !complete {
                report.finding(format!(
                    "Checkpoint s3://{bucket}/{k}\tINVALID: leaves of log {node}/{log} below {} are missing, so its root cannot be recomputed",
                    c.tree_size
                ));
                return;
            }
            if hex::encode(f.root()) != c.root_hash {
                report.finding(format!(
                    "Checkpoint s3://{bucket}/{k}\tINVALID: the lines do not hash to its root (records altered, inserted or reordered)"
                ));
            }
        }
    }
}

/// Objects in the logs' key space that no checkpoint lists.
fn check_unlisted(b: &Bucket, bucket: &str, opts: &Options, report: &mut Report) {
    let listed: HashMap<&str, ()> = b
        .logs
        .values()
        .flat_map(|l| l.objects.keys().map(|k| (k.as_str(), ())))
        .collect();
    let covered = |log: &str| -> Option<(u64, u64)> {
        let cs: Vec<&Checkpoint> = b
            .logs
            .iter()
            .filter(|((_, l), _)| l == log)
            .flat_map(|(_, l)| l.checkpoints.iter().map(|c| &c.1))
            .collect();
        let since = cs.iter().map(|c| c.since_ms).min()?;
        let until = cs.iter().map(|c| c.last_entry_ms).max()?;
        Some((since, until))
    };
    let records = covered("records");
    let trail = covered("trail");
    // Record objects are named by the time of their first entry (to the millisecond),
    // then a discriminator that is a hash, not a sequence. Objects are delivered in
    // journal order, so a copy of a listed object under another name, with an older
    // time, would pass as "not covered yet" until the next checkpoint unless names are
    // compared too: one whose time is *before* the newest listed object's is no newer
    // object. Two objects whose first entries share a millisecond cannot be ordered by
    // name (the hash decides), so a tie is "not covered yet", never "inserted" (the
    // system simulation's seed 320 found that false alarm on a healthy bucket).
    let name_time = |k: &str| -> Option<String> {
        let name = k.rsplit('/').next()?;
        Some(name.split('_').next()?.to_string())
    };
    let newest_listed = b
        .logs
        .iter()
        .filter(|((_, l), _)| l == "records")
        .flat_map(|(_, l)| l.objects.keys())
        .filter_map(|k| name_time(k))
        .max();
    for (k, kind) in &b.all {
        if listed.contains_key(k.as_str()) {
            continue;
        }
        let span = key_time(k, *kind);
        if !in_range(opts, span) && (opts.start_ms.is_some() || opts.end_ms.is_some()) {
            continue;
        }
        let window = if *kind == Kind::Trail { trail } else { records };
        let at = format!("s3://{bucket}/{k}");
        match (span, window) {
            (Some((from, to)), Some((since, until))) if from >= since && to <= until => {
                report.finding(format!(
                    "Log object {at}\tINVALID: not in any checkpoint, though checkpoints cover its time (inserted, or its checkpoint was deleted)"
                ));
            }
            (Some((_, to)), Some((since, _))) if to <= since => {
                if opts.verbose {
                    report.lines.push(format!(
                        "Log object {at}\tnot covered: written before the log began"
                    ));
                }
            }
            (None, Some(_)) => report.finding(format!(
                "Log object {at}\tINVALID: not in any checkpoint, and its name carries no time"
            )),
            _ if *kind == Kind::Records
                && newest_listed
                    .as_ref()
                    .is_some_and(|n| name_time(k).is_some_and(|m| m < *n)) =>
            {
                report.finding(format!(
                    "Log object {at}\tINVALID: not in any checkpoint, though its name is older than the newest object they list (inserted)"
                ));
            }
            _ => {
                report.pending += 1;
                if opts.verbose {
                    report.lines.push(format!(
                        "Log object {at}\tnot covered yet: newer than the newest checkpoint"
                    ));
                }
            }
        }
    }
}

/// Check trusted checkpoints against the bucket's trees.
fn check_trusted(b: &Bucket, opts: &Options, report: &mut Report) {
    for t in &opts.trusted {
        if let Err(e) = t.verify(&opts.keys) {
            report.finding(format!(
                "Trusted checkpoint {}/{} size {}\tINVALID: {e}",
                t.node, t.log, t.tree_size
            ));
            continue;
        }
        let l = b.logs.get(&(t.node.clone(), t.log.clone()));
        let newest = l
            .and_then(|l| l.checkpoints.last())
            .map_or(0, |c| c.1.tree_size);
        let mut f = Frontier::default();
        let mut ok = newest >= t.tree_size;
        if ok {
            for h in l
                .map(|l| l.leaves.iter())
                .into_iter()
                .flatten()
                .take(t.tree_size as usize)
            {
                match h {
                    Some(h) => {
                        f.push(*h);
                    }
                    None => ok = false,
                }
            }
        }
        if !ok || f.size() != t.tree_size || hex::encode(f.root()) != t.root_hash {
            report.finding(format!(
                "Trusted checkpoint {}/{} size {}\tINVALID: the bucket no longer holds the tree it signed (newest checkpoint there: size {newest})",
                t.node, t.log, t.tree_size
            ));
        }
    }
}

/// Verify a bucket.
pub async fn verify_bucket(
    store: Arc<dyn ObjectStore>,
    bucket: &str,
    opts: &Options,
) -> Result<Report, NotaryError> {
    let mut report = Report::default();
    let ranged = opts.start_ms.is_some() || opts.end_ms.is_some();
    report.lines.push(format!(
        "Validating checkpoints and log objects in s3://{bucket}{}",
        if ranged {
            " (within the time range given)"
        } else {
            ""
        }
    ));
    let mut b = load(&store, bucket, &opts.keys, &mut report).await?;
    if b.logs.is_empty() {
        report.finding(format!(
            "No valid checkpoint in s3://{bucket}: nothing can be verified (is integrity on, and is this the archive bucket?)"
        ));
        return Ok(report);
    }
    check_chains(&mut b, bucket, &mut report);
    check_objects(&store, &mut b, bucket, opts, &Find::None, &mut report).await?;
    if !ranged {
        check_roots(&b, bucket, &mut report);
        check_trusted(&b, opts, &mut report);
    }
    check_unlisted(&b, bucket, opts, &mut report);
    for ((node, log), l) in &b.logs {
        if let Some((k, c)) = l.checkpoints.last() {
            report.lines.push(format!(
                "Log {node}/{log}: {} leaves, newest checkpoint {} ({}, root {})",
                c.tree_size, k, c.time, c.root_hash
            ));
            let overdue = c
                .time_ms
                .saturating_add(c.every_ms.saturating_mul(2).max(60_000));
            if opts.now_ms > overdue {
                report.lines.push(format!(
                    "  note: no checkpoint since {}; one is written at least every {} s while the node runs, so if it ran after that, a checkpoint is missing",
                    c.time,
                    c.every_ms / 1000
                ));
            }
        }
    }
    report.lines.push("Results:".into());
    report.lines.push(format!(
        "{}/{} checkpoints valid",
        report.checkpoints.1, report.checkpoints.0
    ));
    report.lines.push(format!(
        "{}/{} log objects valid ({} records and trail events)",
        report.objects.1, report.objects.0, report.leaves
    ));
    if report.pending > 0 {
        report.lines.push(format!(
            "{} log objects delivered after the newest checkpoint (covered by the next one)",
            report.pending
        ));
    }
    report.lines.push(if report.findings == 0 {
        "No problem found.".into()
    } else {
        format!("{} problems found.", report.findings)
    });
    Ok(report)
}

/// A proof, as `logbook prove` prints it and `logbook verify --proof` reads it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Proof {
    /// One record (or trail event) is in a signed tree.
    #[serde(rename = "inclusion", rename_all = "camelCase")]
    Inclusion {
        /// Where the line is.
        object: String,
        /// Its leaf index.
        leaf_index: u64,
        /// The line, exactly.
        line: String,
        /// RFC 6962 audit path, hex.
        audit_path: Vec<String>,
        /// The signed checkpoint whose tree holds it.
        checkpoint: Checkpoint,
    },
    /// A tree extends an older one.
    #[serde(rename = "consistency", rename_all = "camelCase")]
    Consistency {
        /// The older signed checkpoint.
        old: Checkpoint,
        /// The newer signed checkpoint.
        new: Checkpoint,
        /// RFC 6962 consistency proof, hex.
        path: Vec<String>,
    },
}

fn hexes(v: &[Hash]) -> Vec<String> {
    v.iter().map(hex::encode).collect()
}

/// An inclusion proof of the record (by `requestId`) or trail event (by `eventID`) `id`,
/// against its log's newest checkpoint.
pub async fn prove_inclusion(
    store: Arc<dyn ObjectStore>,
    bucket: &str,
    keys: &[PublicKey],
    id: &str,
) -> Result<Proof, NotaryError> {
    let mut report = Report::default();
    let mut b = load(&store, bucket, keys, &mut report).await?;
    check_chains(&mut b, bucket, &mut report);
    let opts = Options::default();
    check_objects(
        &store,
        &mut b,
        bucket,
        &opts,
        &Find::Id(id.to_string()),
        &mut report,
    )
    .await?;
    for l in b.logs.values() {
        let Some((index, object, line)) = &l.found else {
            continue;
        };
        let Some((_, c)) = l.checkpoints.iter().rev().find(|c| c.1.tree_size > *index) else {
            continue;
        };
        let leaves: Option<Vec<Hash>> = l.leaves[..c.tree_size as usize].iter().copied().collect();
        let Some(leaves) = leaves else {
            return Err(NotaryError::Invalid(format!(
                "the bucket fails verification ({} problems): run logbook verify",
                report.findings
            )));
        };
        return Ok(Proof::Inclusion {
            object: object.clone(),
            leaf_index: *index,
            line: String::from_utf8_lossy(line).into_owned(),
            audit_path: hexes(&merkle::inclusion_proof(&leaves, *index as usize)),
            checkpoint: c.clone(),
        });
    }
    Err(NotaryError::Invalid(format!(
        "no checkpointed record or trail event has the id {id:?} in s3://{bucket} (a record delivered after the newest checkpoint is covered by the next one)"
    )))
}

/// A consistency proof between two checkpoints of one log (by tree size; the newest when
/// `new_size` is none).
pub async fn prove_consistency(
    store: Arc<dyn ObjectStore>,
    bucket: &str,
    keys: &[PublicKey],
    log: &str,
    old_size: u64,
    new_size: Option<u64>,
) -> Result<Proof, NotaryError> {
    let mut report = Report::default();
    let mut b = load(&store, bucket, keys, &mut report).await?;
    check_chains(&mut b, bucket, &mut report);
    check_objects(
        &store,
        &mut b,
        bucket,
        &Options::default(),
        &Find::None,
        &mut report,
    )
    .await?;
    let l = b
        .logs
        .iter()
        .find(|((_, name), _)| name == log)
        .map(|(_, l)| l)
        .ok_or_else(|| NotaryError::Invalid(format!("no log {log:?} in s3://{bucket}")))?;
    let pick = |size: u64| {
        l.checkpoints
            .iter()
            .rev()
            .find(|c| c.1.tree_size == size)
            .map(|c| c.1.clone())
            .ok_or_else(|| {
                NotaryError::Invalid(format!("no checkpoint of log {log} has tree size {size}"))
            })
    };
    let old = pick(old_size)?;
    let new = match new_size {
        Some(n) => pick(n)?,
        None => l
            .checkpoints
            .last()
            .map(|c| c.1.clone())
            .ok_or_else(|| NotaryError::Invalid(format!("log {log} has no checkpoint")))?,
    };
    if old.tree_size > new.tree_size {
        return Err(NotaryError::Invalid(
            "the old tree is larger than the new one".into(),
        ));
    }
    let leaves: Option<Vec<Hash>> = l.leaves[..new.tree_size as usize].iter().copied().collect();
    let leaves = leaves.ok_or_else(|| {
        NotaryError::Invalid(format!(
            "the bucket fails verification ({} problems): run logbook verify",
            report.findings
        ))
    })?;
    Ok(Proof::Consistency {
        path: hexes(&merkle::consistency_proof(&leaves, old.tree_size as usize)),
        old,
        new,
    })
}

fn parse_path(v: &[String]) -> Result<Vec<Hash>, NotaryError> {
    v.iter().map(|h| parse_hash(h)).collect()
}

/// Check a proof offline; returns what it proves.
pub fn verify_proof(proof: &Proof, keys: &[PublicKey]) -> Result<String, NotaryError> {
    match proof {
        Proof::Inclusion {
            object,
            leaf_index,
            line,
            audit_path,
            checkpoint,
        } => {
            checkpoint.verify(keys)?;
            let path = parse_path(audit_path)?;
            let leaf = leaf_hash(line.as_bytes());
            if !merkle::verify_inclusion(
                &leaf,
                *leaf_index,
                checkpoint.tree_size,
                &path,
                &checkpoint.root()?,
            ) {
                return Err(NotaryError::Invalid(
                    "the audit path does not lead from this line to the checkpoint's root".into(),
                ));
            }
            Ok(format!(
                "Inclusion proof valid: the line in {object} is leaf {leaf_index} of log {}/{} (tree size {}, root {}), signed {} by key {}",
                checkpoint.node, checkpoint.log, checkpoint.tree_size, checkpoint.root_hash, checkpoint.time, checkpoint.key_id
            ))
        }
        Proof::Consistency { old, new, path } => {
            old.verify(keys)?;
            new.verify(keys)?;
            if (old.node.as_str(), old.log.as_str()) != (new.node.as_str(), new.log.as_str()) {
                return Err(NotaryError::Invalid(
                    "the two checkpoints are of different logs".into(),
                ));
            }
            let p = parse_path(path)?;
            if !merkle::verify_consistency(
                old.tree_size,
                new.tree_size,
                &old.root()?,
                &new.root()?,
                &p,
            ) {
                return Err(NotaryError::Invalid(format!(
                    "the tree of size {} does not extend the tree of size {}",
                    new.tree_size, old.tree_size
                )));
            }
            Ok(format!(
                "Consistency proof valid: log {}/{} at size {} ({}) extends size {} ({})",
                new.node, new.log, new.tree_size, new.time, old.tree_size, old.time
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(text: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(text).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_gzip_bomb_is_refused_unread() {
        // Lines up to the limit are read...
        let mut ok = b"{}\n".repeat(MAX_OBJECT_TEXT / 3);
        ok.truncate(MAX_OBJECT_TEXT - MAX_OBJECT_TEXT % 3);
        let mut n = 0;
        each_line(&gz(&ok), Kind::Records, |_| n += 1).unwrap();
        assert_eq!(n, MAX_OBJECT_TEXT / 3);
        // ...one byte more is refused, whatever the trailer claims, without reading on.
        let bomb = gz(&vec![b'\n'; 64 * MAX_OBJECT_TEXT]);
        assert!(bomb.len() < MAX_OBJECT_TEXT / 8, "{}", bomb.len());
        let e = each_line(&bomb, Kind::Records, |_| {}).unwrap_err();
        assert!(e.contains("gzip bomb"), "{e}");
        let e = each_line(&bomb, Kind::Trail, |_| {}).unwrap_err();
        assert!(e.contains("gzip bomb"), "{e}");
    }
}
