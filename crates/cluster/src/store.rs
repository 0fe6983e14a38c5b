//! Each replica's store in the home bucket, and every replica's queries over all of them
//! (issue #13, point 1).
//!
//! [`Mirror`] publishes this replica's store: every Parquet file its manifest names is
//! copied to `logbook/store/<node>/files/<path>` first, then the manifest to
//! `logbook/store/<node>/manifest.json`, so a published manifest never names a file that
//! is not there. Store files are immutable, so a file is uploaded once; one the manifest
//! dropped (compaction, retention) is deleted from the bucket after a grace period, for
//! queries already reading it elsewhere. Only this node writes under its prefix (its
//! claim makes sure).
//!
//! [`Peers`] reads the other replicas' manifests (at most once per interval) and gives a
//! query their files for a group and time range. A manifest that is not one (wrong kind,
//! another node's name, a format newer than this build, a path that leaves its prefix) is
//! reported and skipped, never read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use logbook_bucket::{Bucket, BucketError, BucketSpec};
use logbook_store::{FileMeta, ManifestView, Store};
use object_store::path::Path as StorePath;
use object_store::ObjectStoreExt as _;
use serde::{Deserialize, Serialize};

/// Where replicas' stores live in the home.
pub const STORE_PREFIX: &str = "logbook/store/";
const KIND: &str = "logbook-store-manifest/1";

/// A store file's name in the home: a digest of its path in the store (group folders
/// are percent-encoded names, which object keys and URLs would each re-encode) and its
/// own file name, in characters that both leave alone.
pub fn remote_name(path: &str) -> String {
    use sha2::Digest as _;
    let digest = hex::encode(&sha2::Sha256::digest(path.as_bytes())[..8]);
    let file: String = path
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    format!("{digest}-{file}")
}

/// A node's folder in the home.
pub fn node_prefix(node: &str) -> String {
    format!("{STORE_PREFIX}{node}/")
}

/// A published manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Published {
    /// Always `"logbook-store-manifest/1"`.
    pub kind: String,
    /// The node whose store it is.
    pub node: String,
    /// When it was published (ms since the epoch).
    pub published_ms: u64,
    /// The store's manifest.
    pub store: ManifestView,
}

/// Counters of a mirror, for `/healthz`.
#[derive(Debug, Default, Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct MirrorHealth {
    /// Manifests published.
    pub published: u64,
    /// Files uploaded.
    pub files_uploaded: u64,
    /// Files deleted from the bucket after compaction or retention.
    pub files_deleted: u64,
    /// The journal position the last published manifest covers.
    pub published_next_seq: u64,
    /// When it was published (ms since the epoch).
    pub published_ms: u64,
    /// The last error, while it lasts.
    pub last_error: Option<String>,
}

/// Publishes one replica's store to the home.
pub struct Mirror {
    store: Arc<Store>,
    home: Bucket,
    node: String,
    uploaded: HashSet<String>,
    retired: HashMap<String, Instant>,
    last: Option<ManifestView>,
    grace: Duration,
    health: Arc<Mutex<MirrorHealth>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Mirror {
    /// A mirror of `store` for `node` (whose claim this process holds). Lists what the
    /// node already published, so a restart uploads only what is new.
    pub async fn new(
        store: Arc<Store>,
        home: Bucket,
        node: &str,
        grace: Duration,
    ) -> Result<Mirror, BucketError> {
        let files = format!("{}files/", node_prefix(node));
        let listed: Vec<object_store::ObjectMeta> = home
            .store()
            .list(Some(&StorePath::from(files.as_str())))
            .try_collect()
            .await
            .map_err(|e| BucketError::Store {
                bucket: home.name().to_string(),
                source: e,
            })?;
        let uploaded = listed
            .into_iter()
            .filter_map(|m| {
                m.location
                    .as_ref()
                    .strip_prefix(files.as_str())
                    .map(String::from)
            })
            .collect();
        Ok(Mirror {
            store,
            home,
            node: node.to_string(),
            uploaded,
            retired: HashMap::new(),
            last: None,
            grace,
            health: Arc::new(Mutex::new(MirrorHealth::default())),
        })
    }

    /// Its counters, shared with `/healthz`.
    pub fn health(&self) -> Arc<Mutex<MirrorHealth>> {
        self.health.clone()
    }

    /// Publish the store if its manifest changed since the last time; whether it did.
    pub async fn sync(&mut self) -> Result<bool, BucketError> {
        let view = self.store.manifest_view();
        let changed = self.last.as_ref() != Some(&view);
        let prefix = node_prefix(&self.node);
        if changed {
            let wanted: Vec<&FileMeta> = view.groups.values().flat_map(|g| &g.files).collect();
            for f in wanted {
                let remote = remote_name(&f.path);
                if self.uploaded.contains(&remote) {
                    continue;
                }
                let local = self.store.dir().join(&f.path);
                let bytes = match tokio::task::spawn_blocking(move || std::fs::read(local)).await {
                    Ok(Ok(b)) => b,
                    // Compacted away since the manifest was read: the next pass sees the
                    // manifest that replaced it.
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                    Ok(Err(e)) => {
                        return Err(BucketError::Io {
                            bucket: self.home.name().to_string(),
                            source: e,
                        })
                    }
                    Err(e) => {
                        return Err(BucketError::Io {
                            bucket: self.home.name().to_string(),
                            source: std::io::Error::other(e.to_string()),
                        })
                    }
                };
                self.home
                    .put(&format!("{prefix}files/{remote}"), bytes)
                    .await?;
                self.uploaded.insert(remote);
                self.health
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .files_uploaded += 1;
            }
            let published = Published {
                kind: KIND.into(),
                node: self.node.clone(),
                published_ms: now_ms(),
                store: view.clone(),
            };
            let body = serde_json::to_vec(&published).map_err(|e| BucketError::Io {
                bucket: self.home.name().to_string(),
                source: std::io::Error::other(e),
            })?;
            self.home
                .put(&format!("{prefix}manifest.json"), body)
                .await?;
            {
                let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
                h.published += 1;
                h.published_next_seq = view.next_seq;
                h.published_ms = published.published_ms;
            }
            let names: HashSet<String> = view
                .groups
                .values()
                .flat_map(|g| g.files.iter().map(|f| remote_name(&f.path)))
                .collect();
            let now = Instant::now();
            for p in &self.uploaded {
                if !names.contains(p) {
                    self.retired.entry(p.clone()).or_insert(now);
                }
            }
            self.retired.retain(|p, _| !names.contains(p));
            self.last = Some(view);
        }
        // Files the manifest dropped, once no query elsewhere can still be reading them.
        let due: Vec<String> = self
            .retired
            .iter()
            .filter(|(_, t)| t.elapsed() >= self.grace)
            .map(|(p, _)| p.clone())
            .collect();
        for p in due {
            self.home.delete(&format!("{prefix}files/{p}")).await?;
            self.retired.remove(&p);
            self.uploaded.remove(&p);
            self.health
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .files_deleted += 1;
        }
        Ok(changed)
    }

    /// Publish every `every` until `stop`, then once more (after the store's last flush,
    /// which the caller awaits before stopping this).
    pub async fn run(mut self, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                _ = stop.changed() => true,
            };
            let result = self.sync().await;
            let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(_) => h.last_error = None,
                Err(e) => {
                    if h.last_error.is_none() {
                        tracing::warn!(error = %e, "store not published to the cluster home (retrying)");
                    }
                    h.last_error = Some(e.to_string());
                }
            }
            if stopping {
                return;
            }
        }
    }
}

/// What a query of one replica reads from the others.
pub struct Peers {
    home: Bucket,
    own: String,
    every: Duration,
    cache: tokio::sync::Mutex<PeersCache>,
    errors: Mutex<BTreeMap<String, String>>,
    files: Option<(Arc<FileCache>, tokio::runtime::Handle)>,
}

/// Other replicas' store files copied to local disk, so queries read them from there
/// instead of from the home on every query. A file is kept under a name made of its
/// node, its name in the home, its size and whether its bodies were removed, so a file
/// written again (bodies removed) is a new copy; files are copied newest first up to
/// the cap, and a copy no manifest names any more is deleted. A copy is written to a
/// temporary name and renamed when complete, so a crash leaves no partial file in use.
pub struct FileCache {
    dir: std::path::PathBuf,
    cap: u64,
    grace: Duration,
    home: Bucket,
    held: Mutex<HashMap<String, u64>>,
    /// Copies no longer handed to queries, deleted after [`CACHE_GRACE`] (a query that
    /// was handed one may still be about to open it).
    dropped: Mutex<Vec<(Instant, String)>>,
    filling: std::sync::atomic::AtomicBool,
    copied: std::sync::atomic::AtomicU64,
}

/// What `/healthz` says about the cache.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileCacheHealth {
    /// Files held.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// The cap.
    pub cap_bytes: u64,
    /// Files copied from the home since the start.
    pub copied: u64,
}

/// How long a dropped copy stays on disk for queries already planned over it.
pub const CACHE_GRACE: Duration = Duration::from_secs(600);

fn cache_name(node: &str, f: &FileMeta) -> Option<String> {
    let safe = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !s.starts_with('.')
    };
    if !safe(node) {
        return None;
    }
    let bodies = if f.bodies_removed { "-nobodies" } else { "" };
    Some(format!(
        "{node}--{}--{}{bodies}.parquet",
        remote_name(&f.path),
        f.bytes
    ))
}

impl FileCache {
    /// A cache in `dir` of at most `cap` bytes of `home`'s files; what a previous run
    /// left complete is kept, unfinished copies are removed.
    pub fn open(dir: std::path::PathBuf, cap: u64, home: Bucket) -> std::io::Result<FileCache> {
        std::fs::create_dir_all(&dir)?;
        let mut held = HashMap::new();
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".parquet") && e.file_type()?.is_file() {
                held.insert(name, e.metadata()?.len());
            } else {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(FileCache {
            dir,
            cap,
            grace: CACHE_GRACE,
            home,
            held: Mutex::new(held),
            dropped: Mutex::new(Vec::new()),
            filling: Default::default(),
            copied: Default::default(),
        })
    }

    /// Delete dropped copies after `grace` instead of [`CACHE_GRACE`].
    pub fn with_grace(mut self, grace: Duration) -> FileCache {
        self.grace = grace;
        self
    }

    /// Files held, bytes, cap.
    pub fn health(&self) -> FileCacheHealth {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        FileCacheHealth {
            files: held.len(),
            bytes: held.values().sum(),
            cap_bytes: self.cap,
            copied: self.copied.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn local(&self, node: &str, f: &FileMeta) -> Option<String> {
        let name = cache_name(node, f)?;
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.contains_key(&name)
            .then(|| self.dir.join(name).display().to_string())
    }

    /// Bring the cache in line with `nodes`' manifests (one fill at a time; a fill asked
    /// for while one runs is skipped: the next refresh asks again).
    async fn fill(self: Arc<Self>, nodes: BTreeMap<String, Published>) {
        use std::sync::atomic::Ordering;
        if self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        // Cleared however this ends (a task cancelled at shutdown included).
        struct Done<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(false, std::sync::atomic::Ordering::Release);
            }
        }
        let _done = Done(&self.filling);
        // Newest first, up to the cap.
        let mut all: Vec<(i64, String, String, u64)> = Vec::new();
        for (node, p) in &nodes {
            for f in p.store.groups.values().flat_map(|g| &g.files) {
                if let Some(name) = cache_name(node, f) {
                    let key = format!("{}files/{}", node_prefix(node), remote_name(&f.path));
                    all.push((f.max_ts, name, key, f.bytes));
                }
            }
        }
        all.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut budget = self.cap;
        let mut wanted = Vec::new();
        for (_, name, key, bytes) in all {
            if bytes > budget {
                continue;
            }
            budget -= bytes;
            wanted.push((name, key, bytes));
        }
        let keep: HashSet<&str> = wanted.iter().map(|(n, _, _)| n.as_str()).collect();
        // Copies no manifest wants any more are no longer handed out, and deleted after
        // the grace; ones dropped long enough ago go now.
        let expired: Vec<String> = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let mut dropped = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
            let gone: Vec<String> = held
                .keys()
                .filter(|n| !keep.contains(n.as_str()))
                .cloned()
                .collect();
            for n in gone {
                held.remove(&n);
                dropped.push((Instant::now(), n));
            }
            let (old, young): (Vec<_>, Vec<_>) = std::mem::take(&mut *dropped)
                .into_iter()
                .partition(|(t, n)| t.elapsed() >= self.grace && !held.contains_key(n));
            *dropped = young;
            old.into_iter().map(|(_, n)| n).collect()
        };
        for n in expired {
            let _ = tokio::fs::remove_file(self.dir.join(n)).await;
        }
        for (name, key, bytes) in wanted {
            let have = self
                .held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&name);
            if have {
                continue;
            }
            match self.copy(&name, &key, bytes).await {
                Ok(len) => {
                    self.held
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name, len);
                    self.copied.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(file = %key, error = %e, "a replica's store file was not copied to the local cache (queries read it from the home)");
                }
            }
        }
    }

    /// Copy `key`, which its manifest says is `expected` bytes: an object of another size
    /// (a lying or stale manifest) is not kept, and the copy stops as soon as it is
    /// longer, so the cap holds whatever the home holds.
    async fn copy(&self, name: &str, key: &str, expected: u64) -> Result<u64, String> {
        use tokio::io::AsyncWriteExt as _;
        let got = self
            .home
            .store()
            .get(&StorePath::from(key))
            .await
            .map_err(|e| e.to_string())?;
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut out = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| e.to_string())?;
        let mut stream = got.into_stream();
        let mut len = 0u64;
        let result: Result<(), String> = async {
            while let Some(chunk) = stream.try_next().await.map_err(|e| e.to_string())? {
                len += chunk.len() as u64;
                if len > expected {
                    return Err(format!(
                        "longer than the {expected} bytes its manifest says"
                    ));
                }
                out.write_all(&chunk).await.map_err(|e| e.to_string())?;
            }
            out.flush().await.map_err(|e| e.to_string())?;
            if len != expected {
                return Err(format!("{len} bytes, not the {expected} its manifest says"));
            }
            Ok(())
        }
        .await;
        drop(out);
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, self.dir.join(name))
            .await
            .map_err(|e| e.to_string())?;
        Ok(len)
    }
}

#[derive(Default)]
struct PeersCache {
    at: Option<Instant>,
    nodes: BTreeMap<String, Published>,
}

fn check(node: &str, p: &Published) -> Result<(), String> {
    if p.kind != KIND {
        return Err(format!("kind {:?}, not {KIND:?}", p.kind));
    }
    if p.node != node {
        return Err(format!("names node {:?} but lies under {node:?}", p.node));
    }
    if p.store.format_version > logbook_store::FORMAT_VERSION {
        return Err(format!(
            "store format {} is newer than this build reads ({})",
            p.store.format_version,
            logbook_store::FORMAT_VERSION
        ));
    }
    for f in p.store.groups.values().flat_map(|g| &g.files) {
        if f.path.is_empty()
            || f.path.starts_with('/')
            || f.path
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(format!("file path {:?} leaves the node's folder", f.path));
        }
    }
    Ok(())
}

impl Peers {
    /// Other replicas' stores in `home`, re-read at most every `every`.
    pub fn new(home: Bucket, own_node: &str, every: Duration) -> Peers {
        Peers {
            home,
            own: own_node.to_string(),
            every,
            cache: tokio::sync::Mutex::new(PeersCache::default()),
            errors: Mutex::new(BTreeMap::new()),
            files: None,
        }
    }

    /// Keep the files read on local disk (see [`FileCache`]); the copies are made by
    /// tasks on `runtime` (not on the query threads that notice new files).
    pub fn with_cache(mut self, cache: FileCache, runtime: tokio::runtime::Handle) -> Peers {
        self.files = Some((Arc::new(cache), runtime));
        self
    }

    /// The local cache's state, if there is one.
    pub fn cache_health(&self) -> Option<FileCacheHealth> {
        self.files.as_ref().map(|(f, _)| f.health())
    }

    /// Manifests that were skipped, by node, and why.
    pub fn errors(&self) -> BTreeMap<String, String> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The replicas whose stores are read, with the journal position each published.
    pub async fn nodes(&self) -> BTreeMap<String, u64> {
        let cache = self.refreshed().await;
        cache
            .nodes
            .iter()
            .map(|(n, p)| (n.clone(), p.store.next_seq))
            .collect()
    }

    async fn refreshed(&self) -> tokio::sync::MutexGuard<'_, PeersCache> {
        let mut cache = self.cache.lock().await;
        if cache.at.is_some_and(|t| t.elapsed() < self.every) {
            return cache;
        }
        match self.read_all().await {
            Ok(nodes) => {
                if let Some((fc, rt)) = &self.files {
                    rt.spawn(fc.clone().fill(nodes.clone()));
                }
                cache.nodes = nodes
            }
            Err(e) => {
                // The home is unreachable: queries read what was last seen.
                self.errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert("(home)".into(), e);
            }
        }
        cache.at = Some(Instant::now());
        cache
    }

    async fn read_all(&self) -> Result<BTreeMap<String, Published>, String> {
        let store = self.home.store();
        let listed = store
            .list_with_delimiter(Some(&StorePath::from(STORE_PREFIX)))
            .await
            .map_err(|e| e.to_string())?;
        let mut nodes = BTreeMap::new();
        let mut errors = BTreeMap::new();
        for dir in listed.common_prefixes {
            let Some(node) = dir.filename().map(String::from) else {
                continue;
            };
            if node == self.own {
                continue;
            }
            let key = format!("{}manifest.json", node_prefix(&node));
            let got = match self.home.get(&key).await {
                Ok(b) => b,
                // A node that uploaded files but no manifest yet: nothing to read.
                Err(BucketError::Store {
                    source: object_store::Error::NotFound { .. },
                    ..
                }) => continue,
                Err(e) => {
                    errors.insert(node, e.to_string());
                    continue;
                }
            };
            match serde_json::from_slice::<Published>(&got)
                .map_err(|e| e.to_string())
                .and_then(|p| check(&node, &p).map(|()| p))
            {
                Ok(p) => {
                    nodes.insert(node, p);
                }
                Err(e) => {
                    tracing::warn!(node = %node, error = %e, "a replica's store manifest in the cluster home is skipped");
                    errors.insert(node, format!("{key}: {e}"));
                }
            }
        }
        *self.errors.lock().unwrap_or_else(|p| p.into_inner()) = errors;
        Ok(nodes)
    }

    fn location(&self, key: &str) -> String {
        match self.home.spec() {
            BucketSpec::Local(dir) => dir.join(key).display().to_string(),
            BucketSpec::S3(s) => format!("s3://{}/{key}", s.bucket),
        }
    }
}

#[async_trait::async_trait]
impl logbook_query::PeerFiles for Peers {
    async fn files(&self, group: &str, start: i64, end: i64) -> Vec<(String, FileMeta)> {
        let cache = self.refreshed().await;
        let mut out = Vec::new();
        for (node, p) in &cache.nodes {
            let Some(g) = p.store.groups.get(group) else {
                continue;
            };
            for f in g
                .files
                .iter()
                .filter(|f| f.max_ts >= start && f.min_ts <= end)
            {
                if let Some(local) = self.files.as_ref().and_then(|(c, _)| c.local(node, f)) {
                    out.push((local, f.clone()));
                    continue;
                }
                let key = format!("{}files/{}", node_prefix(node), remote_name(&f.path));
                out.push((self.location(&key), f.clone()));
            }
        }
        out
    }

    fn object_store(&self) -> Option<(String, Arc<dyn object_store::ObjectStore>)> {
        match self.home.spec() {
            BucketSpec::Local(_) => None,
            BucketSpec::S3(s) => Some((format!("s3://{}", s.bucket), self.home.store())),
        }
    }
}
