//! Buckets: where archives, trails and offloaded bodies live, and where imports read from.
//!
//! A bucket is declared once (`[[buckets]]`) and opened here into a [`Bucket`]: an
//! [`ObjectStore`] for every read and list (the SQL `archive` table, `logbook trail`,
//! `logbook import`), plus [`Bucket::put`], the one durable write.
//!
//! * **Local** (`path = "/dir"`): `object_store`'s `LocalFileSystem` for reads; writes go
//!   through a [`Disk`] (staged as `<name>#0`, which the object store's listings skip,
//!   fsync'd, renamed into place, folder fsync'd), because `LocalFileSystem` renames
//!   without fsync and a cursor must never run ahead of what survives a power loss.
//! * **S3-compatible** (`url = "s3://name"`): `object_store`'s S3 client (AWS S3, MinIO,
//!   Ceph, R2, moto, ...), virtual-hosted or path-style, optional endpoint, server-side
//!   encryption (SSE-S3 or SSE-KMS). A `PutObject` that returned 200 is durable.
//!   Credentials: the declaration's, else `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
//!   (`AWS_SESSION_TOKEN`), else the shared credentials file (`AWS_PROFILE`), else what
//!   `object_store` finds itself (web identity, container, instance metadata).

use bytes::Bytes;
use logbook_disk::Disk;
pub mod lifecycle;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bucket errors, classified for retry.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// The declaration is wrong (fix the configuration).
    #[error("bucket {bucket}: {reason}")]
    Config {
        /// The bucket's name.
        bucket: String,
        /// What is wrong.
        reason: String,
    },
    /// The object store failed. S3's error code, when its answer has one, comes first:
    /// the rest (the URL, the retries, the XML) is long, and health reports shorten it.
    #[error("bucket {bucket}: {}{source}", code_first(.source))]
    Store {
        /// The bucket's name.
        bucket: String,
        /// The cause.
        #[source]
        source: object_store::Error,
    },
    /// Local I/O failed.
    #[error("bucket {bucket}: {source}")]
    Io {
        /// The bucket's name.
        bucket: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl BucketError {
    /// Could this write have failed because of what was written rather than where: a name
    /// or a size the store refuses (`ENAMETOOLONG`, `EFBIG`, `EINVAL` locally; a 4xx
    /// from a remote store, such as S3's `KeyTooLongError` or `EntityTooLarge`, other
    /// than a timeout or throttling)? Only such failures can make a destination set an
    /// entry aside (park it): a local `EIO`, a full disk, a failed fsync, a 5xx, a
    /// throttle or a broken connection say nothing about the entry and are retried
    /// however long they last. A remote error that names no status is not the entry's.
    pub fn may_be_the_item(&self) -> bool {
        match self {
            BucketError::Config { .. } => false,
            BucketError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::InvalidFilename
                    | std::io::ErrorKind::FileTooLarge
                    | std::io::ErrorKind::InvalidInput
            ),
            BucketError::Store { source, .. } => {
                !self.is_permanent()
                    && http_status(source)
                        .is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429)
            }
        }
    }

    /// Will the same write fail again however often it is retried (access denied, no such
    /// bucket, bad credentials, an SSE-KMS key the credentials cannot use, a bad
    /// declaration)? Such errors are reported at once and retried slowly; the rest
    /// (timeouts, 5xx, throttling, resets, local I/O) are retried with backoff.
    pub fn is_permanent(&self) -> bool {
        match self {
            BucketError::Config { .. } => true,
            BucketError::Io { .. } => false,
            // S3 answers 400 `KMS.NotFoundException`, `KMS.DisabledException`, ... for a
            // key it cannot use: nothing a retry changes until someone fixes the key.
            BucketError::Store { source, .. }
                if s3_error_code(source).is_some_and(|c| c.starts_with("KMS.")) =>
            {
                true
            }
            BucketError::Store { source, .. } => matches!(
                source,
                object_store::Error::NotFound { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::NotImplemented { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
            ),
        }
    }
}

/// The first thing `find` reads in the text of `e` or of one of its sources.
/// `object_store` keeps S3's status and answer in a type it does not export
/// (`RetryError`), but they are in the text of the error chain.
fn in_chain<T>(e: &object_store::Error, find: impl Fn(&str) -> Option<T>) -> Option<T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(v) = find(&err.to_string()) {
            return Some(v);
        }
        cur = err.source();
    }
    None
}

/// The HTTP status a remote store answered with ("... status code: <NNN> ...").
fn http_status(e: &object_store::Error) -> Option<u16> {
    in_chain(e, |text| {
        let i = text.find("status code: ")?;
        text[i + "status code: ".len()..].get(..3)?.parse().ok()
    })
}

fn code_first(e: &object_store::Error) -> String {
    s3_error_code(e).map_or_else(String::new, |c| format!("{c}: "))
}

/// The error code of an S3 error body (`<Code>...</Code>`) in a remote store's error.
fn s3_error_code(e: &object_store::Error) -> Option<String> {
    in_chain(e, |text| {
        let rest = &text[text.find("<Code>")? + "<Code>".len()..];
        Some(rest[..rest.find("</Code>")?].to_string())
    })
}

/// Server-side encryption of an S3 bucket's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// SSE-S3 (`AES256`).
    S3,
    /// SSE-KMS with a key id (the bucket's default key when `None`).
    Kms(Option<String>),
}

/// An S3-compatible bucket's declaration.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Spec {
    /// The bucket's name on the remote.
    pub bucket: String,
    /// Its region.
    pub region: String,
    /// An endpoint other than AWS's (`http://127.0.0.1:9000`).
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual-hosted.
    pub path_style: bool,
    /// Explicit access key id.
    pub access_key_id: Option<String>,
    /// Explicit secret (never printed).
    pub secret_access_key: Option<String>,
    /// Explicit session token (never printed).
    pub session_token: Option<String>,
    /// Server-side encryption.
    pub sse: Option<Sse>,
}

impl std::fmt::Debug for S3Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Spec")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("sse", &self.sse)
            .finish()
    }
}

/// Where a bucket lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketSpec {
    /// A folder on this machine.
    Local(PathBuf),
    /// An S3-compatible bucket.
    S3(S3Spec),
}

impl BucketSpec {
    /// How to name it to a person: the folder, or `s3://bucket` (and the endpoint).
    pub fn describe(&self) -> String {
        match self {
            BucketSpec::Local(p) => p.display().to_string(),
            BucketSpec::S3(s) => match &s.endpoint {
                Some(e) => format!("s3://{} at {e}", s.bucket),
                None => format!("s3://{} ({})", s.bucket, s.region),
            },
        }
    }

    /// The local folder, when it is one.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            BucketSpec::Local(p) => Some(p),
            BucketSpec::S3(_) => None,
        }
    }
}

struct LocalWrites {
    fs: LocalFileSystem,
    disk: Arc<dyn Disk>,
}

/// An opened bucket.
#[derive(Clone)]
pub struct Bucket {
    name: String,
    spec: BucketSpec,
    store: Arc<dyn ObjectStore>,
    local: Option<Arc<LocalWrites>>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("name", &self.name)
            .field("spec", &self.spec)
            .finish()
    }
}

impl Bucket {
    /// Open a declared bucket. A local folder is created (mode from the umask) and written
    /// through `disk`; nothing is sent to a remote bucket until it is used.
    pub fn open(name: &str, spec: &BucketSpec, disk: Arc<dyn Disk>) -> Result<Bucket, BucketError> {
        let cfg = |reason: String| BucketError::Config {
            bucket: name.to_string(),
            reason,
        };
        match spec {
            BucketSpec::Local(path) => {
                disk.create_dir_all(path).map_err(|e| BucketError::Io {
                    bucket: name.into(),
                    source: e,
                })?;
                let fs = LocalFileSystem::new_with_prefix(path)
                    .map_err(|e| cfg(format!("folder {}: {e}", path.display())))?;
                let reads = LocalFileSystem::new_with_prefix(path)
                    .map_err(|e| cfg(format!("folder {}: {e}", path.display())))?;
                Ok(Bucket {
                    name: name.into(),
                    spec: spec.clone(),
                    store: Arc::new(reads),
                    local: Some(Arc::new(LocalWrites { fs, disk })),
                })
            }
            BucketSpec::S3(s) => {
                let store = s3_builder(s, &std::env::vars().collect())
                    .build()
                    .map_err(|e| cfg(e.to_string()))?;
                Ok(Bucket {
                    name: name.into(),
                    spec: spec.clone(),
                    store: Arc::new(store),
                    local: None,
                })
            }
        }
    }

    /// The declared name (what `s3Config.bucketName` says).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its declaration.
    pub fn spec(&self) -> &BucketSpec {
        &self.spec
    }

    /// The object store, for reads and listings.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Write an object durably: when this returns, the object survives a crash of this
    /// machine (local: fsync'd file and folder; S3: the PUT was acknowledged).
    pub async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), BucketError> {
        let path = StorePath::from(key);
        match &self.local {
            Some(local) => {
                let file = local
                    .fs
                    .path_to_filesystem(&path)
                    .map_err(|e| self.store_err(e))?;
                let local = local.clone();
                tokio::task::spawn_blocking(move || put_local(&*local.disk, &file, &data))
                    .await
                    .map_err(|e| self.io_err(std::io::Error::other(e.to_string())))?
                    .map_err(|e| self.io_err(e))
            }
            None => self
                .store
                .put(&path, PutPayload::from(Bytes::from(data)))
                .await
                .map(|_| ())
                .map_err(|e| self.store_err(e)),
        }
    }

    /// Read a whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes, BucketError> {
        let r = self
            .store
            .get(&StorePath::from(key))
            .await
            .map_err(|e| self.store_err(e))?;
        r.bytes().await.map_err(|e| self.store_err(e))
    }

    fn store_err(&self, source: object_store::Error) -> BucketError {
        BucketError::Store {
            bucket: self.name.clone(),
            source,
        }
    }

    fn io_err(&self, source: std::io::Error) -> BucketError {
        BucketError::Io {
            bucket: self.name.clone(),
            source,
        }
    }
}

/// The S3 client's settings for a declaration, credentials resolved as documented.
fn s3_builder(s: &S3Spec, env: &HashMap<String, String>) -> AmazonS3Builder {
    // Few quick retries inside a call: delivery retries with its own backoff and counts
    // every failure, so an outage shows in its health within seconds, not minutes.
    let retry = object_store::RetryConfig {
        max_retries: 2,
        retry_timeout: std::time::Duration::from_secs(20),
        ..Default::default()
    };
    let options = object_store::ClientOptions::new()
        .with_connect_timeout(std::time::Duration::from_secs(5))
        .with_timeout(std::time::Duration::from_secs(30));
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(&s.bucket)
        .with_region(&s.region)
        .with_virtual_hosted_style_request(!s.path_style)
        .with_retry(retry)
        .with_client_options(options);
    if let Some(e) = &s.endpoint {
        b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
    }
    let creds = match (&s.access_key_id, &s.secret_access_key) {
        (Some(a), Some(k)) => Some(logbook_wire::credentials::AwsCredentials {
            access_key_id: a.clone(),
            secret_access_key: k.clone(),
            session_token: s.session_token.clone(),
        }),
        _ => logbook_wire::credentials::credentials_from(env, |p| std::fs::read_to_string(p).ok()),
    };
    if let Some(c) = creds {
        b = b
            .with_access_key_id(c.access_key_id)
            .with_secret_access_key(c.secret_access_key);
        if let Some(t) = c.session_token {
            b = b.with_token(t);
        }
    } else {
        // Web identity, container and instance-metadata credentials, as object_store
        // finds them from the environment.
        for (k, v) in env {
            if k.starts_with("AWS_") {
                if let Ok(key) = k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                    if !matches!(
                        key,
                        AmazonS3ConfigKey::Bucket
                            | AmazonS3ConfigKey::Region
                            | AmazonS3ConfigKey::Endpoint
                    ) {
                        b = b.with_config(key, v.clone());
                    }
                }
            }
        }
    }
    // (object_store names its encryption keys only through their strings.)
    let sse_key = "aws_server_side_encryption".parse::<AmazonS3ConfigKey>();
    let kms_key = "aws_sse_kms_key_id".parse::<AmazonS3ConfigKey>();
    match (&s.sse, sse_key, kms_key) {
        (Some(Sse::S3), Ok(k), _) => b = b.with_config(k, "AES256"),
        (Some(Sse::Kms(id)), Ok(k), Ok(kid)) => {
            b = b.with_config(k, "aws:kms");
            if let Some(id) = id {
                b = b.with_config(kid, id.clone());
            }
        }
        _ => {}
    }
    b
}

/// Write one object of a local bucket durably: a staging file beside it (named as the
/// object store's own staging files, `<name>#<digits>`, which its listings skip),
/// fsync'd, renamed into place, and the folder fsync'd.
pub fn put_local(disk: &dyn Disk, file: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = file
        .parent()
        .ok_or_else(|| std::io::Error::other("an object path without a folder"))?;
    disk.create_dir_all(dir)?;
    let mut staging = file.as_os_str().to_owned();
    staging.push("#0");
    let staging = PathBuf::from(staging);
    let f = disk.create(&staging)?;
    f.write_at(data, 0)?;
    f.sync_all()?;
    drop(f);
    disk.rename(&staging, file)?;
    disk.sync_dir(dir)
}

#[cfg(test)]
mod tests {
    #[derive(Debug)]
    struct Answer(&'static str);
    impl std::fmt::Display for Answer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Answer {}

    fn remote(text: &'static str) -> super::BucketError {
        super::BucketError::Store {
            bucket: "b".into(),
            source: object_store::Error::Generic {
                store: "S3",
                source: Box::new(Answer(text)),
            },
        }
    }

    fn local(errno: i32) -> super::BucketError {
        super::BucketError::Io {
            bucket: "b".into(),
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    #[test]
    fn only_what_the_entry_can_cause_may_be_the_item() {
        // The entry: a name or size the store refuses.
        assert!(local(36).may_be_the_item()); // ENAMETOOLONG
        assert!(local(27).may_be_the_item()); // EFBIG
        assert!(remote("Error performing PUT http://s3/b/k in 1ms - Server returned non-2xx status code: 400 Bad Request: <Code>KeyTooLongError</Code>").may_be_the_item());
        assert!(remote("... status code: 413 Payload Too Large: EntityTooLarge").may_be_the_item());
        // Not the entry: the disk, the network, the service's load, the credentials.
        assert!(!local(5).may_be_the_item()); // EIO
        assert!(!local(28).may_be_the_item()); // ENOSPC
        assert!(!remote("... status code: 503 Service Unavailable: SlowDown").may_be_the_item());
        assert!(!remote("... status code: 500 Internal Server Error").may_be_the_item());
        assert!(!remote("... status code: 429 Too Many Requests").may_be_the_item());
        assert!(!remote("... status code: 408 Request Timeout").may_be_the_item());
        assert!(!remote("error sending request: connection reset by peer").may_be_the_item());
        let denied = super::BucketError::Store {
            bucket: "b".into(),
            source: object_store::Error::PermissionDenied {
                path: "k".into(),
                source: Box::new(Answer("status code: 403 Forbidden")),
            },
        };
        assert!(!denied.may_be_the_item());
    }

    #[test]
    fn an_sse_kms_key_that_cannot_be_used_is_permanent_and_not_the_entry() {
        let kms = remote("Error performing PUT http://s3/b/k in 2ms - Server returned non-2xx status code: 400 Bad Request: <?xml version=\"1.0\"?><Error><Code>KMS.NotFoundException</Code><Message>Invalid keyId k</Message></Error>");
        assert!(kms.is_permanent());
        assert!(
            kms.to_string()
                .starts_with("bucket b: KMS.NotFoundException: Generic S3 error"),
            "{kms}"
        );
        assert!(
            !kms.may_be_the_item(),
            "every write fails alike: the key, not the entry"
        );
        let too_long =
            remote("... status code: 400 Bad Request: <Error><Code>KeyTooLongError</Code></Error>");
        assert!(!too_long.is_permanent() && too_long.may_be_the_item());
    }

    use super::*;

    #[test]
    fn explicit_credentials_win_and_secrets_are_not_printed() {
        let s = S3Spec {
            bucket: "b".into(),
            region: "eu-west-1".into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            path_style: true,
            access_key_id: Some("AKIAEXPLICIT".into()),
            secret_access_key: Some("very-secret".into()),
            session_token: None,
            sse: Some(Sse::Kms(Some("key-1".into()))),
        };
        let env: HashMap<String, String> = [
            ("AWS_ACCESS_KEY_ID".to_string(), "AKIAENV".to_string()),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                "env-secret".to_string(),
            ),
        ]
        .into();
        let b = s3_builder(&s, &env);
        assert_eq!(
            b.get_config_value(&AmazonS3ConfigKey::AccessKeyId)
                .as_deref(),
            Some("AKIAEXPLICIT")
        );
        assert_eq!(
            b.get_config_value(&"aws_sse_kms_key_id".parse().unwrap())
                .as_deref(),
            Some("key-1")
        );
        assert!(!format!("{s:?}").contains("very-secret"));
        // Without explicit keys, the environment's.
        let s2 = S3Spec {
            access_key_id: None,
            secret_access_key: None,
            ..s
        };
        assert_eq!(
            s3_builder(&s2, &env)
                .get_config_value(&AmazonS3ConfigKey::AccessKeyId)
                .as_deref(),
            Some("AKIAENV")
        );
    }

    #[test]
    fn local_objects_are_durable_and_readable_through_the_store() {
        let d = tempfile::tempdir().unwrap();
        let spec = BucketSpec::Local(d.path().join("b"));
        let b = Bucket::open("b", &spec, logbook_disk::RealDisk::shared()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(b.put("a/b/c.json.gz", b"hello".to_vec()))
            .unwrap();
        assert_eq!(&rt.block_on(b.get("a/b/c.json.gz")).unwrap()[..], b"hello");
        let missing = rt.block_on(b.get("nope")).unwrap_err();
        assert!(missing.is_permanent(), "{missing}");
    }
}
