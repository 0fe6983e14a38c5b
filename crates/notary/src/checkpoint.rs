//! Checkpoints: a signed statement of a log's tree (size, root hash, time, key id) and of
//! the objects delivered since the previous checkpoint, each with its SHA-256 and the
//! leaves it holds. Written to the bucket beside the logs, as CloudTrail writes its digest
//! files, under [`checkpoint_key`].

use crate::keys::{PublicKey, SigningKey};
use crate::merkle::Hash;
use crate::NotaryError;
use base64::Engine;
use sha2::{Digest, Sha256};

/// The checkpoint format version.
pub const VERSION: u32 = 1;

/// Where checkpoints live in a bucket.
pub const PREFIX: &str = "LogbookCheckpoints/";

/// A delivered object a checkpoint covers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectEntry {
    /// Its key in the bucket.
    pub key: String,
    /// SHA-256 of its bytes as stored, hex.
    pub sha256: String,
    /// The leaves it holds, in the order of its lines: runs of `[first index, count]`
    /// (empty for an offloaded body, which no line is).
    pub leaves: Vec<[u64; 2]>,
}

impl ObjectEntry {
    /// Leaves held.
    pub fn leaf_count(&self) -> u64 {
        self.leaves.iter().map(|r| r[1]).sum()
    }

    /// The leaf indices, in line order.
    pub fn indices(&self) -> impl Iterator<Item = u64> + '_ {
        self.leaves
            .iter()
            .flat_map(|r| r[0]..r[0].saturating_add(r[1]))
    }
}

/// The tree a previous checkpoint signed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Previous {
    /// Its size.
    pub tree_size: u64,
    /// Its root, hex.
    pub root_hash: String,
}

/// A signed checkpoint. A member it does not know is refused, not skipped: the file is
/// evidence, and a renamed member (`"previous": null` under another name reads as the
/// same `None`) must not pass as the original.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpoint {
    /// [`VERSION`].
    pub logbook_checkpoint_version: u32,
    /// The log: `records` (invocation records of this bucket) or `trail`.
    pub log: String,
    /// The node that wrote it.
    pub node: String,
    /// Leaves in the tree.
    pub tree_size: u64,
    /// RFC 6962 root hash, hex.
    pub root_hash: String,
    /// When it was signed, RFC 3339.
    pub time: String,
    /// When it was signed, Unix ms.
    pub time_ms: u64,
    /// When the log began, Unix ms (objects older than this were never in it).
    pub since_ms: u64,
    /// Journal time of the newest entry the tree holds, Unix ms (0: none yet).
    pub last_entry_ms: u64,
    /// The previous checkpoint's tree (none for the first).
    pub previous: Option<Previous>,
    /// The longest the node waits between checkpoints while it runs, ms.
    pub every_ms: u64,
    /// Objects delivered since the previous checkpoint.
    pub objects: Vec<ObjectEntry>,
    /// The signing key's id.
    pub key_id: String,
    /// Ed25519 signature of [`Checkpoint::signing_text`], base64.
    pub signature: String,
}

/// The key of a checkpoint: sorted by log, then tree size, then time; the last part,
/// from its contents, keeps two checkpoints signed in the same millisecond apart (an idle
/// one right after one listing objects overwrote it: found by the system simulation).
pub fn checkpoint_key(c: &Checkpoint) -> String {
    let tag = hex::encode(&Sha256::digest(c.signing_text())[..4]);
    format!(
        "{PREFIX}{}/{}/{:020}_{:016}_{tag}.json",
        c.node, c.log, c.tree_size, c.time_ms
    )
}

/// A checkpoint's `time`: its `time_ms` in RFC 3339 (UTC). The signature covers
/// `time_ms`, so [`Checkpoint::verify`] holds `time` to this rendering of it.
pub fn time_text(time_ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(time_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl Checkpoint {
    /// What the signature covers: every field but the signature and `time` (which must
    /// be [`time_text`] of the signed `time_ms`), one per line, the objects by their
    /// SHA-256 over one line each.
    pub fn signing_text(&self) -> Vec<u8> {
        let mut objects = Sha256::new();
        for o in &self.objects {
            let runs: Vec<String> = o
                .leaves
                .iter()
                .map(|r| format!("{}+{}", r[0], r[1]))
                .collect();
            objects.update(format!("{}\t{}\t{}\n", o.key, o.sha256, runs.join(",")));
        }
        let previous = self.previous.as_ref().map_or("-".to_string(), |p| {
            format!("{}:{}", p.tree_size, p.root_hash)
        });
        format!(
            "logbook-checkpoint/{}\nlog={}\nnode={}\ntreeSize={}\nrootHash={}\ntimeMs={}\nsinceMs={}\nlastEntryMs={}\nprevious={}\neveryMs={}\nobjects={}\nkeyId={}\n",
            self.logbook_checkpoint_version,
            self.log,
            self.node,
            self.tree_size,
            self.root_hash,
            self.time_ms,
            self.since_ms,
            self.last_entry_ms,
            previous,
            self.every_ms,
            hex::encode(objects.finalize()),
            self.key_id
        )
        .into_bytes()
    }

    /// Sign it with `key` (sets the key id and the signature).
    pub fn sign(&mut self, key: &SigningKey) {
        self.key_id = key.id().to_string();
        let sig = key.sign(&self.signing_text());
        self.signature = base64::engine::general_purpose::STANDARD.encode(sig);
    }

    /// Check the signature with whichever of `keys` has its key id.
    pub fn verify(&self, keys: &[PublicKey]) -> Result<(), NotaryError> {
        if self.logbook_checkpoint_version != VERSION {
            return Err(NotaryError::Invalid(format!(
                "checkpoint format version {} is not one this build reads ({VERSION})",
                self.logbook_checkpoint_version
            )));
        }
        let Some(key) = keys.iter().find(|k| k.id() == self.key_id) else {
            let given: Vec<&str> = keys.iter().map(PublicKey::id).collect();
            return Err(NotaryError::Invalid(format!(
                "signed by key {}, which is not among the public keys given ({})",
                self.key_id,
                given.join(", ")
            )));
        };
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|_| NotaryError::Invalid("signature is not base64".into()))?;
        if !key.verify(&self.signing_text(), &sig) {
            return Err(NotaryError::Invalid(format!(
                "signature does not match its contents (key {})",
                self.key_id
            )));
        }
        // `time` is not signed (checkpoints written before this check carry it too): it
        // must say what the signed `time_ms` says, or a reader of the file is misled.
        let signed = time_text(self.time_ms);
        if self.time != signed {
            return Err(NotaryError::Invalid(format!(
                "its time {:?} is not its signed timeMs {} ({signed})",
                self.time, self.time_ms
            )));
        }
        Ok(())
    }

    /// The file's bytes: pretty JSON and a newline, the one form a checkpoint is written
    /// in, so [`Checkpoint::parse`] can hold a file to it byte for byte.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Read a checkpoint file. Its bytes must be exactly [`Checkpoint::to_bytes`] of what
    /// they parse to: the signature covers values, not the text around them, and a file
    /// that is evidence must not change at all unnoticed (a dropped final newline, a
    /// space, members reordered). This does not check the signature ([`Checkpoint::verify`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, NotaryError> {
        let c: Checkpoint = serde_json::from_slice(bytes)
            .map_err(|e| NotaryError::Invalid(format!("not a checkpoint ({e})")))?;
        let canonical = c.to_bytes();
        if canonical != bytes {
            let at = canonical
                .iter()
                .zip(bytes)
                .position(|(a, b)| a != b)
                .unwrap_or(canonical.len().min(bytes.len()));
            return Err(NotaryError::Invalid(format!(
                "not in the form checkpoints are written in (first difference at byte {at} of {}; {} expected)",
                bytes.len(),
                canonical.len()
            )));
        }
        Ok(c)
    }

    /// Its root hash.
    pub fn root(&self) -> Result<Hash, NotaryError> {
        parse_hash(&self.root_hash)
    }
}

/// A hex SHA-256.
pub fn parse_hash(s: &str) -> Result<Hash, NotaryError> {
    let mut h = [0u8; 32];
    hex::decode_to_slice(s, &mut h)
        .map_err(|_| NotaryError::Invalid(format!("{s:?} is not a hex SHA-256")))?;
    Ok(h)
}

/// Runs of consecutive indices.
pub fn runs(indices: &[u64]) -> Vec<[u64; 2]> {
    let mut out: Vec<[u64; 2]> = Vec::new();
    for &i in indices {
        match out.last_mut() {
            Some(r) if r[0] + r[1] == i => r[1] += 1,
            _ => out.push([i, 1]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &SigningKey) -> Checkpoint {
        let mut c = Checkpoint {
            logbook_checkpoint_version: VERSION,
            log: "records".into(),
            node: "n1".into(),
            tree_size: 3,
            root_hash: hex::encode([7u8; 32]),
            time: time_text(1_764_633_600_000),
            time_ms: 1_764_633_600_000,
            since_ms: 0,
            last_entry_ms: 1,
            previous: None,
            every_ms: 60_000,
            objects: vec![ObjectEntry {
                key: "a".into(),
                sha256: hex::encode([1u8; 32]),
                leaves: runs(&[0, 1, 2]),
            }],
            key_id: String::new(),
            signature: String::new(),
        };
        c.sign(key);
        c
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_any_change_breaks_it() {
        let k = SigningKey::from_pem(&SigningKey::generate_pem().unwrap()).unwrap();
        let c = sample(&k);
        c.verify(&[k.public()]).unwrap();
        let mut d = c.clone();
        d.tree_size = 4;
        assert!(d
            .verify(&[k.public()])
            .unwrap_err()
            .to_string()
            .contains("does not match"));
        let mut d = c.clone();
        d.objects[0].leaves = vec![[0, 2]];
        assert!(d.verify(&[k.public()]).is_err());
        let mut d = c.clone();
        d.objects[0].key = "b".into();
        assert!(d.verify(&[k.public()]).is_err());
        // `time` is outside the signature but held to the signed `time_ms`.
        assert_eq!(c.time, "2025-12-02T00:00:00Z");
        let mut d = c.clone();
        d.time = "2025-12-02T00:00:01Z".into();
        let e = d.verify(&[k.public()]).unwrap_err().to_string();
        assert!(e.contains("is not its signed timeMs"), "{e}");
        // A first checkpoint's `"previous": null` under another name is refused.
        let text = String::from_utf8(serde_json::to_vec(&c).unwrap()).unwrap();
        assert!(text.contains("\"previous\":null"), "{text}");
        let renamed = text.replace("\"previous\":null", "\"pr1vious\":null");
        assert!(serde_json::from_str::<Checkpoint>(&renamed).is_err());
        let other = SigningKey::from_pem(&SigningKey::generate_pem().unwrap()).unwrap();
        let e = c.verify(&[other.public()]).unwrap_err().to_string();
        assert!(e.contains(k.id()) && e.contains("not among"), "{e}");
        // Rotation: with both keys given, the old checkpoint still verifies.
        c.verify(&[other.public(), k.public()]).unwrap();
    }

    #[test]
    fn a_checkpoint_file_is_read_only_in_the_form_it_is_written() {
        let k = SigningKey::from_pem(&SigningKey::generate_pem().unwrap()).unwrap();
        let c = sample(&k);
        let bytes = c.to_bytes();
        assert_eq!(Checkpoint::parse(&bytes).unwrap(), c);
        // The same values in any other text are refused: each of these parses as JSON
        // to the same checkpoint.
        let text = String::from_utf8(bytes.clone()).unwrap();
        let variants = [
            text.trim_end().to_string(),
            format!("{text}\n"),
            text.replacen("  \"log\"", "   \"log\"", 1),
            String::from_utf8(serde_json::to_vec(&c).unwrap()).unwrap(),
            text.replacen("\"treeSize\": 3", "\"treeSize\": 3.0", 1),
        ];
        for v in variants {
            assert_ne!(v.as_bytes(), &bytes[..]);
            let e = Checkpoint::parse(v.as_bytes()).unwrap_err().to_string();
            assert!(
                e.contains("not in the form") || e.contains("not a checkpoint"),
                "{e}"
            );
        }
        let e = Checkpoint::parse(b"{}").unwrap_err().to_string();
        assert!(e.contains("not a checkpoint"), "{e}");
    }

    #[test]
    fn runs_compress_consecutive_indices() {
        assert_eq!(runs(&[0, 1, 2, 5, 6, 9]), vec![[0, 3], [5, 2], [9, 1]]);
        assert!(runs(&[]).is_empty());
    }
}
