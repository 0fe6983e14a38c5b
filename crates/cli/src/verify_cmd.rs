//! `logbook verify`, `logbook prove`, `logbook keys`: tamper evidence, offline (no server,
//! no journal: the bucket and the public keys are enough).

use anyhow::{bail, Context};
use logbook_notary::verify::{self, Options, Proof};
use logbook_notary::{Checkpoint, PublicKey, SigningKey};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// Which bucket to read.
#[derive(clap::Args)]
pub struct BucketArgs {
    #[command(flatten)]
    data: crate::DataArgs,
    /// Bucket name, as declared in the configuration (default: the archive bucket).
    #[arg(long, conflicts_with = "bucket_dir")]
    bucket: Option<String>,
    /// A local folder holding a copy of the bucket (no configuration needed).
    #[arg(long)]
    bucket_dir: Option<PathBuf>,
    /// Public key (SPKI PEM) to check signatures with; repeat it for keys rotated out.
    /// Default: the one beside the configured signing key.
    #[arg(long = "public-key")]
    public_keys: Vec<PathBuf>,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    bucket: BucketArgs,
    /// Check a proof file (from `logbook prove`) instead of a bucket.
    #[arg(long)]
    proof: Option<PathBuf>,
    /// Only objects at or after this time (RFC 3339 or a date).
    #[arg(long)]
    start: Option<String>,
    /// Only objects before this time (RFC 3339 or a date).
    #[arg(long)]
    end: Option<String>,
    /// A checkpoint kept from an earlier verification: the bucket must still extend it
    /// (catches a newest checkpoint deleted together with what it covered). Repeatable.
    #[arg(long = "checkpoint")]
    trusted: Vec<PathBuf>,
    /// Print valid objects too.
    #[arg(long)]
    verbose: bool,
    /// Where a lifecycle rule moved old objects: a declared bucket (default: the rule's
    /// `transition_to`, when the bucket has one).
    #[arg(long, conflicts_with = "cold_dir")]
    cold_bucket: Option<String>,
    /// A local folder holding the cold bucket.
    #[arg(long)]
    cold_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ProveArgs {
    #[command(flatten)]
    bucket: BucketArgs,
    /// The record's requestId (or a trail event's eventID).
    #[arg(required_unless_present = "consistency")]
    id: Option<String>,
    /// Prove that the log's tree of this size is a prefix of a later one.
    #[arg(long, value_name = "OLD_SIZE")]
    consistency: Option<u64>,
    /// The later tree's size (default: the newest checkpoint).
    #[arg(long, requires = "consistency")]
    to: Option<u64>,
    /// Which log: records or trail.
    #[arg(long, default_value = "records", value_parser = ["records", "trail"])]
    log: String,
}

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Write a new Ed25519 signing key (PKCS#8 PEM, 0600) and its public key beside it.
    Generate {
        /// Where to write the private key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key (SPKI PEM) of a signing key.
    Public {
        /// The private key file.
        key: PathBuf,
    },
    /// Write a new master key for encryption at rest (`[encryption] master_key_file`):
    /// 32 random bytes, base64, in a new file readable only by its owner.
    GenerateMaster {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the id of a master key (what journal segments and store files record).
    MasterId {
        /// The master key file.
        key: PathBuf,
    },
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

fn keys(args: &BucketArgs) -> anyhow::Result<Vec<PublicKey>> {
    let mut paths = args.public_keys.clone();
    if paths.is_empty() {
        let config = crate::load_data(&args.data)?;
        let Some(i) = &config.integrity else {
            bail!("integrity is off in this configuration: give --public-key");
        };
        paths.push(logbook_server::app::public_key_path(&i.signing_key));
    }
    paths
        .iter()
        .map(|p| PublicKey::from_pem(&read(p)?).with_context(|| p.display().to_string()))
        .collect()
}

fn store(args: &BucketArgs) -> anyhow::Result<(String, Arc<dyn object_store::ObjectStore>)> {
    let (name, spec) = match &args.bucket_dir {
        Some(dir) => {
            if !dir.is_dir() {
                bail!("{} is not a folder", dir.display());
            }
            let name = dir.display().to_string();
            (name, logbook_server::config::BucketSpec::Local(dir.clone()))
        }
        None => {
            let config = crate::load_data(&args.data)?;
            let name = args.bucket.clone().unwrap_or(config.archive_bucket.clone());
            let spec = config
                .buckets
                .get(&name)
                .with_context(|| format!("no bucket {name:?} is declared"))?
                .clone();
            (name, spec)
        }
    };
    let bucket = logbook_bucket::Bucket::open(&name, &spec, logbook_journal::RealDisk::shared())
        .map_err(|e| anyhow::anyhow!("bucket {name}: {e}"))?;
    Ok((name, bucket.store()))
}

/// The cold bucket of `verify`: named, a folder, or the lifecycle rule's.
fn cold_store(args: &VerifyArgs) -> anyhow::Result<Option<Arc<dyn object_store::ObjectStore>>> {
    let open = |name: &str, spec: &logbook_server::config::BucketSpec| {
        logbook_bucket::Bucket::open(name, spec, logbook_journal::RealDisk::shared())
            .map(|b| Some(b.store()))
            .map_err(|e| anyhow::anyhow!("cold bucket {name}: {e}"))
    };
    if let Some(dir) = &args.cold_dir {
        if !dir.is_dir() {
            bail!("{} is not a folder", dir.display());
        }
        return open(
            &dir.display().to_string(),
            &logbook_server::config::BucketSpec::Local(dir.clone()),
        );
    }
    if args.bucket.bucket_dir.is_some() && args.cold_bucket.is_none() {
        return Ok(None);
    }
    let config = crate::load_data(&args.bucket.data)?;
    let hot = args
        .bucket
        .bucket
        .clone()
        .unwrap_or(config.archive_bucket.clone());
    let cold = match &args.cold_bucket {
        Some(c) => c.clone(),
        None => match config
            .lifecycle
            .get(&hot)
            .and_then(|r| r.transition_to.clone())
        {
            Some(c) => c,
            None => return Ok(None),
        },
    };
    let spec = config
        .buckets
        .get(&cold)
        .with_context(|| format!("no bucket {cold:?} is declared"))?;
    open(&cold, spec)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn ms(t: time::OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// `logbook verify`: exit non-zero on any finding.
pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let keys = keys(&args.bucket)?;
    let mut out = std::io::stdout().lock();
    if let Some(p) = &args.proof {
        let proof: Proof = serde_json::from_str(&read(p)?)
            .with_context(|| format!("{} is not a proof from logbook prove", p.display()))?;
        let what = verify::verify_proof(&proof, &keys)
            .map_err(|e| anyhow::anyhow!("proof INVALID: {e}"))?;
        writeln!(out, "{what}")?;
        return Ok(());
    }
    let mut trusted = Vec::new();
    for p in &args.trusted {
        let c: Checkpoint = serde_json::from_str(&read(p)?)
            .with_context(|| format!("{} is not a checkpoint", p.display()))?;
        trusted.push(c);
    }
    let instant = |s: &Option<String>| -> anyhow::Result<Option<u64>> {
        s.as_deref()
            .map(|t| logbook_server::tools::parse_instant(t).map(ms))
            .transpose()
            .map_err(Into::into)
    };
    let opts = Options {
        keys,
        start_ms: instant(&args.start)?,
        end_ms: instant(&args.end)?,
        trusted,
        verbose: args.verbose,
        now_ms: ms(time::OffsetDateTime::now_utc()),
        cold: cold_store(&args)?,
    };
    let (name, store) = store(&args.bucket)?;
    let report = runtime()?.block_on(verify::verify_bucket(store, &name, &opts))?;
    for l in &report.lines {
        writeln!(out, "{l}")?;
    }
    if report.findings > 0 {
        bail!("{} problems found in s3://{name}", report.findings);
    }
    Ok(())
}

/// `logbook prove`: print a proof as JSON.
pub fn prove(args: ProveArgs) -> anyhow::Result<()> {
    let keys = keys(&args.bucket)?;
    let (name, store) = store(&args.bucket)?;
    let rt = runtime()?;
    let proof = match (&args.id, args.consistency) {
        (_, Some(old)) => rt.block_on(verify::prove_consistency(
            store, &name, &keys, &args.log, old, args.to,
        ))?,
        (Some(id), None) => rt.block_on(verify::prove_inclusion(store, &name, &keys, id))?,
        (None, None) => bail!("give a request id, or --consistency OLD_SIZE"),
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &proof)?;
    writeln!(out)?;
    Ok(())
}

/// `logbook keys`.
pub fn keys_cmd(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Generate { out } => {
            if out.exists() {
                bail!("{} exists; not overwriting a key", out.display());
            }
            let key = logbook_server::app::signing_key(&out)?;
            let public = logbook_server::app::public_key_path(&out);
            writeln!(
                std::io::stdout(),
                "key id {}\nprivate key {}\npublic key {}",
                key.id(),
                out.display(),
                public.display()
            )?;
        }
        KeysCommand::GenerateMaster { out } => {
            use std::os::unix::fs::OpenOptionsExt;
            let text = logbook_seal::MasterKey::generate_text()?;
            let id = logbook_seal::MasterKey::parse(&text)?.id().to_string();
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true) // never overwrite a key: the data it sealed needs it
                .mode(0o600)
                .open(&out)
                .with_context(|| format!("create {} (it must not exist)", out.display()))?;
            writeln!(f, "{text}")?;
            f.sync_all()?;
            writeln!(
                std::io::stdout(),
                "master key id {id}\nmaster key {}\nkeep a copy somewhere safe: without it, what it encrypted cannot be read",
                out.display()
            )?;
        }
        KeysCommand::MasterId { key } => {
            let k = logbook_seal::MasterKey::parse(&read(&key)?)
                .with_context(|| key.display().to_string())?;
            writeln!(std::io::stdout(), "{}", k.id())?;
        }
        KeysCommand::Public { key } => {
            let k =
                SigningKey::from_pem(&read(&key)?).with_context(|| key.display().to_string())?;
            write!(std::io::stdout(), "{}", k.public_pem())?;
        }
    }
    Ok(())
}
