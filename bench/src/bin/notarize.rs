//! Sign a folder of Bedrock log objects (e.g. from `gen-records`) as the archive's
//! delivery would: every line a leaf of the `records` log (objects in key order), a signed
//! checkpoint every `--every` objects and one at the end. For the `logbook verify`
//! benchmark; the product writes checkpoints as it delivers.
//!
//!   notarize --bucket DIR --key signing-key.pem [--every 50]

use anyhow::Context;
use flate2::read::GzDecoder;
use logbook_notary::{Notary, SigningKey};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let (mut bucket, mut key, mut every) = (None::<PathBuf>, None::<PathBuf>, 50usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().context("missing value")?;
        match a.as_str() {
            "--bucket" => bucket = Some(v.into()),
            "--key" => key = Some(v.into()),
            "--every" => every = v.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let bucket = bucket.context("--bucket DIR is required")?;
    let key = key.context("--key FILE is required")?;
    let key = Arc::new(SigningKey::from_pem(&std::fs::read_to_string(&key)?)?);
    let mut files = Vec::new();
    logbook_bench::log_objects(&bucket, &mut files)?;
    files.sort();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    let mut n = Notary::new("records", "bench", key, Duration::from_secs(3600), 0);
    let write = |n: &mut Notary| -> anyhow::Result<()> {
        if let Some((k, bytes)) = n.checkpoint(now(), true) {
            let p = bucket.join(&k);
            std::fs::create_dir_all(p.parent().context("key")?)?;
            std::fs::write(p, bytes)?;
        }
        Ok(())
    };
    let mut leaves = 0u64;
    for (i, f) in files.iter().enumerate() {
        let bytes = std::fs::read(f)?;
        let mut text = Vec::new();
        GzDecoder::new(&bytes[..]).read_to_end(&mut text)?;
        let idx: Vec<u64> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| n.leaf(l, 1))
            .collect();
        leaves += idx.len() as u64;
        let rel = f.strip_prefix(&bucket)?.to_string_lossy().into_owned();
        n.object(rel, &bytes, &idx);
        if (i + 1) % every == 0 {
            write(&mut n)?;
        }
    }
    write(&mut n)?;
    println!("{} objects, {leaves} leaves signed", files.len());
    Ok(())
}
