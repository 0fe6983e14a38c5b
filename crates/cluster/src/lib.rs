//! What replicas share through one bucket (issue #13, point 1).
//!
//! Several gateway processes that declare the same bucket as their *home* coordinate
//! through it and nothing else: no process talks to another. Two rules make that safe:
//!
//! - **Shared state changes only by compare-and-swap.** [`SharedState`] reads an object
//!   with its version and writes it only if it is still at that version (S3's `If-Match`,
//!   or `If-None-Match: *` for "only if absent"). Two replicas changing one object at once
//!   end with one winner; the other gets [`StateError::Conflict`] and retries from a fresh
//!   read, so no update is lost. A store that ignores those conditions would silently lose
//!   updates, so [`check_conditional_writes`] tests them before a bucket becomes a home.
//! - **A node id is claimed** ([`claim`]). Object keys are derived from the node id (the
//!   archive's `<node>-<first sequence>`), so two processes writing as one node would
//!   overwrite each other's objects. A replica holds a lease on `logbook/cluster/nodes/<id>`
//!   while it runs; a copy of its data folder started elsewhere finds the lease live and
//!   refuses to start, and a data folder restored from an older backup finds that the node
//!   already wrote past its journal and refuses too.
//!
//! Two implementations: [`BucketState`] on any `object_store` (S3-compatible buckets) and
//! [`FolderState`] on a folder shared by processes of one machine (an exclusive file lock
//! around read-compare-write).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::{
    path::Path as StorePath, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, UpdateVersion,
};
use sha2::Digest as _;

pub mod claim;
pub mod lease;
pub mod ledger;
pub mod store;

/// The version of a shared object as last read: an opaque token (an S3 `ETag`, or a
/// digest of a local file's bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(String);

impl Version {
    /// The token, for messages.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Errors of shared state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The object changed (or appeared, or went away) since it was read.
    #[error("{key} in {home} changed since it was read (another replica wrote it)")]
    Conflict {
        /// Where the state lives.
        home: String,
        /// The object.
        key: String,
    },
    /// The store cannot do what shared state needs.
    #[error("{home} cannot hold state that replicas share: it does not support {capability}")]
    Unsupported {
        /// Where the state lives.
        home: String,
        /// What is missing, as the user would look it up.
        capability: String,
    },
    /// The store failed.
    #[error("{home}: {source}")]
    Store {
        /// Where the state lives.
        home: String,
        /// The cause.
        #[source]
        source: object_store::Error,
    },
    /// The local folder failed.
    #[error("{home}: {source}")]
    Io {
        /// Where the state lives.
        home: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl StateError {
    /// Whether this is a lost race (retry from a fresh read), not a failure.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StateError::Conflict { .. })
    }
}

/// Objects that several replicas read and change.
#[async_trait::async_trait]
pub trait SharedState: Send + Sync {
    /// Where it lives, for messages (`s3://bucket at http://...`, a folder).
    fn describe(&self) -> String;
    /// An object and its version; `None` when it does not exist.
    async fn read(&self, key: &str) -> Result<Option<(Bytes, Version)>, StateError>;
    /// Write `data` only if the object is still at `expected` (`None`: only if it does not
    /// exist). Returns the new version, or [`StateError::Conflict`].
    async fn write(
        &self,
        key: &str,
        data: Bytes,
        expected: Option<&Version>,
    ) -> Result<Version, StateError>;
    /// Remove an object whatever its version (one already gone is no error).
    async fn remove(&self, key: &str) -> Result<(), StateError>;
}

/// Shared state in an object store (an S3-compatible bucket): `If-None-Match: *` and
/// `If-Match: <etag>` on `PutObject`.
pub struct BucketState {
    home: String,
    store: Arc<dyn ObjectStore>,
}

impl BucketState {
    /// State in `store`; `home` names it in messages.
    pub fn new(home: impl Into<String>, store: Arc<dyn ObjectStore>) -> BucketState {
        BucketState {
            home: home.into(),
            store,
        }
    }

    fn err(&self, key: &str, e: object_store::Error) -> StateError {
        match e {
            object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. } => StateError::Conflict {
                home: self.home.clone(),
                key: key.to_string(),
            },
            object_store::Error::NotImplemented { operation, .. } => StateError::Unsupported {
                home: self.home.clone(),
                capability: format!("conditional writes ({operation})"),
            },
            source => StateError::Store {
                home: self.home.clone(),
                source,
            },
        }
    }
}

#[async_trait::async_trait]
impl SharedState for BucketState {
    fn describe(&self) -> String {
        self.home.clone()
    }

    async fn read(&self, key: &str) -> Result<Option<(Bytes, Version)>, StateError> {
        let got = match self.store.get(&StorePath::from(key)).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err(key, e)),
        };
        let etag = got.meta.e_tag.clone();
        let data = got.bytes().await.map_err(|e| self.err(key, e))?;
        let Some(etag) = etag else {
            return Err(StateError::Unsupported {
                home: self.home.clone(),
                capability: "ETags on GetObject (needed for If-Match)".into(),
            });
        };
        Ok(Some((data, Version(etag))))
    }

    async fn write(
        &self,
        key: &str,
        data: Bytes,
        expected: Option<&Version>,
    ) -> Result<Version, StateError> {
        let mode = match expected {
            None => PutMode::Create,
            Some(v) => PutMode::Update(UpdateVersion {
                e_tag: Some(v.0.clone()),
                version: None,
            }),
        };
        let put = self
            .store
            .put_opts(&StorePath::from(key), data.into(), PutOptions::from(mode))
            .await
            .map_err(|e| self.err(key, e))?;
        match put.e_tag {
            Some(e) => Ok(Version(e)),
            None => Err(StateError::Unsupported {
                home: self.home.clone(),
                capability: "ETags on PutObject (needed for If-Match)".into(),
            }),
        }
    }

    async fn remove(&self, key: &str) -> Result<(), StateError> {
        match self.store.delete(&StorePath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }
}

/// Shared state in a folder that the replicas of one machine share: each change holds an
/// exclusive lock on `<folder>/.logbook-state.lock` while it reads, compares and writes
/// (the write itself is a durable staging-file rename). A version is a digest of the
/// bytes. Locks on network file systems are only as good as the file system's; use an
/// S3-compatible bucket across machines.
pub struct FolderState {
    root: PathBuf,
}

impl FolderState {
    /// State under `root` (created when first written).
    pub fn new(root: impl Into<PathBuf>) -> FolderState {
        FolderState { root: root.into() }
    }

    fn file(&self, key: &str) -> Result<PathBuf, StateError> {
        // Keys are ours (`logbook/cluster/...`), but a key must never leave the folder.
        if key.is_empty()
            || key
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == ".." || p.contains('\\'))
        {
            return Err(self.io(std::io::Error::other(format!("not a state key: {key:?}"))));
        }
        Ok(self.root.join(key))
    }

    fn io(&self, source: std::io::Error) -> StateError {
        StateError::Io {
            home: self.root.display().to_string(),
            source,
        }
    }

    fn locked<T>(&self, f: impl FnOnce() -> Result<T, StateError>) -> Result<T, StateError> {
        std::fs::create_dir_all(&self.root).map_err(|e| self.io(e))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join(".logbook-state.lock"))
            .map_err(|e| self.io(e))?;
        lock.lock().map_err(|e| self.io(e))?;
        let out = f();
        let _ = lock.unlock();
        out
    }

    fn current(&self, file: &Path) -> Result<Option<(Bytes, Version)>, StateError> {
        match std::fs::read(file) {
            Ok(b) => {
                let v = digest(&b);
                Ok(Some((Bytes::from(b), v)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }
}

fn digest(b: &[u8]) -> Version {
    Version(hex::encode(&sha2::Sha256::digest(b)[..16]))
}

#[async_trait::async_trait]
impl SharedState for FolderState {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    async fn read(&self, key: &str) -> Result<Option<(Bytes, Version)>, StateError> {
        let file = self.file(key)?;
        let me = FolderState::new(self.root.clone());
        tokio::task::spawn_blocking(move || me.locked(|| me.current(&file)))
            .await
            .map_err(|e| self.io(std::io::Error::other(e.to_string())))?
    }

    async fn write(
        &self,
        key: &str,
        data: Bytes,
        expected: Option<&Version>,
    ) -> Result<Version, StateError> {
        let file = self.file(key)?;
        let me = FolderState::new(self.root.clone());
        let expected = expected.cloned();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            me.locked(|| {
                let now = me.current(&file)?.map(|(_, v)| v);
                if now != expected {
                    return Err(StateError::Conflict {
                        home: me.describe(),
                        key,
                    });
                }
                let disk = logbook_disk::RealDisk::shared();
                logbook_bucket::put_local(&*disk, &file, &data).map_err(|e| me.io(e))?;
                Ok(digest(&data))
            })
        })
        .await
        .map_err(|e| self.io(std::io::Error::other(e.to_string())))?
    }

    async fn remove(&self, key: &str) -> Result<(), StateError> {
        let file = self.file(key)?;
        let me = FolderState::new(self.root.clone());
        tokio::task::spawn_blocking(move || {
            me.locked(|| match std::fs::remove_file(&file) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(me.io(e)),
            })
        })
        .await
        .map_err(|e| self.io(std::io::Error::other(e.to_string())))?
    }
}

/// The shared state of a bucket: a local folder is a [`FolderState`] (its writes stay
/// durable the way the bucket's are), anything else a [`BucketState`].
pub fn for_bucket(bucket: &logbook_bucket::Bucket) -> Arc<dyn SharedState> {
    match bucket.spec().local_path() {
        Some(dir) => Arc::new(FolderState::new(dir)),
        None => Arc::new(BucketState::new(bucket.spec().describe(), bucket.store())),
    }
}

/// Prove that `state` honours both conditions before replicas rely on it: a create over
/// an existing object must be refused, and so must an update from a stale version. An
/// S3-compatible server that ignores `If-None-Match`/`If-Match` would accept both and let
/// two replicas overwrite each other's changes without either noticing; it is refused
/// with the capability it lacks. Leaves nothing behind (best effort).
pub async fn check_conditional_writes(state: &dyn SharedState) -> Result<(), StateError> {
    let key = format!("logbook/cluster/probe/{:016x}", rand::random::<u64>());
    let result = probe(state, &key).await;
    let _ = state.remove(&key).await;
    result
}

async fn probe(state: &dyn SharedState, key: &str) -> Result<(), StateError> {
    let unsupported = |capability: &str| StateError::Unsupported {
        home: state.describe(),
        capability: capability.to_string(),
    };
    let first = state.write(key, Bytes::from_static(b"1"), None).await?;
    match state.write(key, Bytes::from_static(b"2"), None).await {
        Err(e) if e.is_conflict() => {}
        Err(e) => return Err(e),
        Ok(_) => {
            return Err(unsupported(
                "conditional writes: a PutObject with If-None-Match: * replaced an existing object",
            ))
        }
    }
    let second = state
        .write(key, Bytes::from_static(b"3"), Some(&first))
        .await?;
    match state
        .write(key, Bytes::from_static(b"4"), Some(&first))
        .await
    {
        Err(e) if e.is_conflict() => {}
        Err(e) => return Err(e),
        Ok(_) => return Err(unsupported(
            "conditional writes: a PutObject with If-Match of an old ETag replaced a newer object",
        )),
    }
    match state.read(key).await? {
        Some((data, v)) if &data[..] == b"3" && v == second => Ok(()),
        Some((data, _)) => Err(unsupported(&format!(
            "read-after-write: a read after a conditional write returned {} bytes of another version",
            data.len()
        ))),
        None => Err(unsupported(
            "read-after-write: an object just written was not found",
        )),
    }
}

/// Change one shared object with `f` (given its current bytes, `None` if absent),
/// retrying from a fresh read when another replica wrote it in between. `f` returning
/// `None` leaves it unchanged. Gives up after `attempts` lost races.
pub async fn update<F>(
    state: &dyn SharedState,
    key: &str,
    attempts: usize,
    mut f: F,
) -> Result<Option<Version>, StateError>
where
    F: FnMut(Option<&[u8]>) -> Option<Vec<u8>> + Send,
{
    let mut last = None;
    for _ in 0..attempts.max(1) {
        let current = state.read(key).await?;
        let Some(next) = f(current.as_ref().map(|(b, _)| &b[..])) else {
            return Ok(current.map(|(_, v)| v));
        };
        match state
            .write(key, Bytes::from(next), current.as_ref().map(|(_, v)| v))
            .await
        {
            Ok(v) => return Ok(Some(v)),
            Err(e) if e.is_conflict() => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| StateError::Conflict {
        home: state.describe(),
        key: key.to_string(),
    }))
}

/// Why [`change`] made no change.
#[derive(Debug)]
pub enum ChangeError<E> {
    /// Reading or writing the home failed, or the race was lost every time.
    State(StateError),
    /// The home's copy could not be decoded, or the change refused.
    Doc(E),
}

/// What [`change`] left in the home.
#[derive(Debug)]
pub struct Changed<D, T> {
    /// The document as it is now in the home.
    pub doc: D,
    /// Its version.
    pub version: Version,
    /// What the change returned.
    pub out: T,
}

/// Change a shared document: read the home's freshest copy (`decode`; an absent one is
/// `D::default()`), apply `f`, and write the result (`encode`) only at the version read,
/// retried from a fresh read on a lost race ([`update`], `attempts` times). `f` returns
/// what it made and whether it changed the document: nothing is written when it did not,
/// unless the home has no copy yet. `f` may run several times and must refuse (an error)
/// before changing anything. A copy `decode` refuses is never overwritten.
pub async fn change<D, T, E>(
    state: &dyn SharedState,
    key: &str,
    attempts: usize,
    decode: impl Fn(&[u8]) -> Result<D, E> + Sync,
    encode: impl Fn(&D) -> Vec<u8> + Sync,
    mut f: impl FnMut(&mut D) -> Result<(T, bool), E> + Send,
) -> Result<Changed<D, T>, ChangeError<E>>
where
    D: Default + Send,
    T: Send,
    E: Send,
{
    let mut failed = None;
    let mut made = None;
    let version = update(state, key, attempts, |cur| {
        failed = None;
        made = None;
        let mut doc = match cur.map(&decode) {
            None => D::default(),
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                failed = Some(e);
                return None;
            }
        };
        match f(&mut doc) {
            Err(e) => {
                failed = Some(e);
                None
            }
            Ok((out, changed)) => {
                let bytes = (changed || cur.is_none()).then(|| encode(&doc));
                made = Some((doc, out));
                bytes
            }
        }
    })
    .await
    .map_err(ChangeError::State)?;
    if let Some(e) = failed {
        return Err(ChangeError::Doc(e));
    }
    match (made, version) {
        (Some((doc, out)), Some(version)) => Ok(Changed { doc, version, out }),
        // Not reached: an absent copy is always written.
        _ => Err(ChangeError::State(StateError::Conflict {
            home: state.describe(),
            key: key.to_string(),
        })),
    }
}

#[cfg(test)]
mod tests;
