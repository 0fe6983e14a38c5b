//! Encryption at rest: envelope encryption with AES-256-GCM (through `ring`, already in the
//! build through rustls).
//!
//! * A **master key** (32 bytes, from a file or the environment) never encrypts data. Its
//!   id is derived from the key itself (`mk-` and 16 hex digits of a SHA-256 over a fixed
//!   label and the key), so an id can be stored beside data without revealing anything.
//! * Each journal segment and each Parquet file gets its own random **data key**, stored
//!   beside the data *wrapped* (AES-256-GCM) under the active master key, with the master
//!   key's id. Reading unwraps it with whichever configured master key has that id, so
//!   rotating the master key (a new active key, the old ones kept for reading) needs no
//!   rewrite of old data.
//! * Data sealed with a data key is `nonce (12) | ciphertext | tag (16)`, the nonce
//!   random per seal (a data key seals at most one segment's entries or one file's pages,
//!   far below the 2^32 random nonces a key allows), authenticated with caller-given
//!   associated data that binds it to its place (a journal entry's sequence number).
//!
//! This crate has no I/O: callers read key files and store what it returns.

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes an authentication tag adds.
pub const TAG_LEN: usize = 16;
/// Bytes sealing adds to a plaintext (nonce and tag).
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Bytes of a wrapped data key.
pub const WRAPPED_LEN: usize = KEY_LEN + OVERHEAD;
/// The environment variable that may hold the master key.
pub const MASTER_KEY_ENV: &str = "LOGBOOK_MASTER_KEY";

/// Errors.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Data was encrypted under a master key that is not configured.
    #[error("encrypted with master key {0}, which is not configured (set [encryption] master_key_file, old_master_key_files or {MASTER_KEY_ENV})")]
    MissingKey(String),
    /// Encrypted data, but no master key at all.
    #[error("encrypted with master key {0}, but no master key is configured (set [encryption] master_key_file or {MASTER_KEY_ENV})")]
    NoKeys(String),
    /// Authentication failed: the data or its place was altered, or the key is wrong.
    #[error("decryption failed: {0} was altered or does not belong here")]
    Tampered(&'static str),
    /// A key's text is not a key.
    #[error("invalid master key: {0}")]
    InvalidKey(String),
    /// The system's random source failed.
    #[error("no randomness available")]
    Random,
}

fn random<const N: usize>() -> Result<[u8; N], SealError> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| SealError::Random)?;
    Ok(b)
}

fn aead_key(bytes: &[u8; KEY_LEN]) -> Result<LessSafeKey, SealError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| SealError::InvalidKey("not an AES-256 key".into()))
}

fn seal_with(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let nonce = random::<NONCE_LEN>()?;
    let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[NONCE_LEN..],
        )
        .map_err(|_| SealError::Tampered("plaintext"))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

fn open_with(
    key: &LessSafeKey,
    aad: &[u8],
    sealed: &[u8],
    what: &'static str,
) -> Result<Vec<u8>, SealError> {
    if sealed.len() < OVERHEAD {
        return Err(SealError::Tampered(what));
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[..NONCE_LEN]);
    let mut buf = sealed[NONCE_LEN..].to_vec();
    let n = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| SealError::Tampered(what))?
        .len();
    buf.truncate(n);
    Ok(buf)
}

/// A master key: wraps data keys, never data.
pub struct MasterKey {
    id: String,
    key: LessSafeKey,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

impl MasterKey {
    /// A master key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Result<MasterKey, SealError> {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"logbook master key id v1\0");
        ctx.update(bytes);
        let id = format!("mk-{}", hex::encode(&ctx.finish().as_ref()[..8]));
        Ok(MasterKey {
            id,
            key: aead_key(bytes)?,
        })
    }

    /// A master key from its text: 64 hex digits or the standard base64 of 32 bytes
    /// (surrounding whitespace ignored), as `logbook keys generate-master` writes.
    pub fn parse(text: &str) -> Result<MasterKey, SealError> {
        let t = text.trim();
        let bytes = if t.len() == 2 * KEY_LEN && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(t).map_err(|e| SealError::InvalidKey(e.to_string()))?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(|_| {
                    SealError::InvalidKey("expected 64 hex digits or the base64 of 32 bytes".into())
                })?
        };
        let arr: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
            SealError::InvalidKey(format!("{} bytes, expected {KEY_LEN}", bytes.len()))
        })?;
        MasterKey::from_bytes(&arr)
    }

    /// A new random master key, as the text [`MasterKey::parse`] reads.
    pub fn generate_text() -> Result<String, SealError> {
        Ok(base64::engine::general_purpose::STANDARD.encode(random::<KEY_LEN>()?))
    }

    /// The key's id (safe to store and print).
    pub fn id(&self) -> &str {
        &self.id
    }

    fn wrap_aad(id: &str) -> Vec<u8> {
        let mut a = b"logbook data key v1\0".to_vec();
        a.extend_from_slice(id.as_bytes());
        a
    }
}

/// A data key wrapped under a master key: what is stored beside the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// Id of the master key that wraps it.
    pub master_key_id: String,
    /// `nonce | encrypted key | tag` ([`WRAPPED_LEN`] bytes).
    pub blob: Vec<u8>,
}

impl WrappedKey {
    /// A compact text form: `<master key id>:<base64 of the blob>`.
    pub fn to_text(&self) -> String {
        format!(
            "{}:{}",
            self.master_key_id,
            base64::engine::general_purpose::STANDARD.encode(&self.blob)
        )
    }

    /// Parse [`WrappedKey::to_text`].
    pub fn from_text(t: &str) -> Option<WrappedKey> {
        let (id, b) = t.split_once(':')?;
        let blob = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
        (blob.len() == WRAPPED_LEN && !id.is_empty()).then(|| WrappedKey {
            master_key_id: id.to_string(),
            blob,
        })
    }
}

/// A data key: seals and opens data.
pub struct DataKey {
    key: LessSafeKey,
    raw: [u8; KEY_LEN],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// Encrypt and authenticate `plaintext`, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        seal_with(&self.key, aad, plaintext)
    }

    /// Decrypt what [`DataKey::seal`] returned with the same `aad`; `what` names the data
    /// in the error.
    pub fn open(
        &self,
        aad: &[u8],
        sealed: &[u8],
        what: &'static str,
    ) -> Result<Vec<u8>, SealError> {
        open_with(&self.key, aad, sealed, what)
    }

    /// The key's bytes (for a library that does its own AES-GCM, as Parquet's modular
    /// encryption does).
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.raw
    }
}

/// The configured master keys: one active (new data is sealed under it), any number
/// kept for reading.
#[derive(Debug, Default, Clone)]
pub struct Keyring {
    active: Option<Arc<MasterKey>>,
    keys: BTreeMap<String, Arc<MasterKey>>,
}

impl Keyring {
    /// A keyring with `active` for new data and `old` for reading.
    pub fn new(active: Option<MasterKey>, old: Vec<MasterKey>) -> Keyring {
        let mut r = Keyring::default();
        for k in old {
            r.keys.insert(k.id.clone(), Arc::new(k));
        }
        if let Some(k) = active {
            let k = Arc::new(k);
            r.keys.insert(k.id.clone(), k.clone());
            r.active = Some(k);
        }
        r
    }

    /// Whether new data is encrypted.
    pub fn encrypts(&self) -> bool {
        self.active.is_some()
    }

    /// Id of the active master key.
    pub fn active_id(&self) -> Option<&str> {
        self.active.as_deref().map(MasterKey::id)
    }

    /// Ids of every configured master key.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// A fresh data key and its wrapping under the active master key; `None` when
    /// encryption is off.
    pub fn new_data_key(&self) -> Result<Option<(DataKey, WrappedKey)>, SealError> {
        let Some(mk) = &self.active else {
            return Ok(None);
        };
        let raw = random::<KEY_LEN>()?;
        let blob = seal_with(&mk.key, &MasterKey::wrap_aad(&mk.id), &raw)?;
        Ok(Some((
            DataKey {
                key: aead_key(&raw)?,
                raw,
            },
            WrappedKey {
                master_key_id: mk.id.clone(),
                blob,
            },
        )))
    }

    /// Unwrap a stored data key with the master key its id names.
    pub fn unwrap_key(&self, w: &WrappedKey) -> Result<DataKey, SealError> {
        let Some(mk) = self.keys.get(&w.master_key_id) else {
            return Err(if self.keys.is_empty() {
                SealError::NoKeys(w.master_key_id.clone())
            } else {
                SealError::MissingKey(w.master_key_id.clone())
            });
        };
        let raw = open_with(&mk.key, &MasterKey::wrap_aad(&mk.id), &w.blob, "a data key")?;
        let raw: [u8; KEY_LEN] = raw
            .as_slice()
            .try_into()
            .map_err(|_| SealError::Tampered("a data key"))?;
        Ok(DataKey {
            key: aead_key(&raw)?,
            raw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> MasterKey {
        MasterKey::from_bytes(&[b; KEY_LEN]).unwrap()
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let ring = Keyring::new(Some(key(1)), vec![]);
        let (dk, w) = ring.new_data_key().unwrap().unwrap();
        let sealed = dk.seal(b"seq 7", b"hello").unwrap();
        assert_eq!(sealed.len(), 5 + OVERHEAD);
        let dk2 = ring.unwrap_key(&w).unwrap();
        assert_eq!(dk2.open(b"seq 7", &sealed, "entry").unwrap(), b"hello");
        // Another place, a flipped bit, a cut: all refused.
        assert!(matches!(
            dk2.open(b"seq 8", &sealed, "entry"),
            Err(SealError::Tampered("entry"))
        ));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(
                dk2.open(b"seq 7", &bad, "entry").is_err(),
                "bit flip at {i}"
            );
        }
        assert!(dk2
            .open(b"seq 7", &sealed[..sealed.len() - 1], "entry")
            .is_err());
        assert!(dk2.open(b"seq 7", &sealed[..3], "entry").is_err());
    }

    #[test]
    fn rotation_reads_old_data_and_a_missing_key_is_named() {
        let old = Keyring::new(Some(key(1)), vec![]);
        let (dk, w) = old.new_data_key().unwrap().unwrap();
        let sealed = dk.seal(b"", b"old data").unwrap();
        // Rotated: key 2 active, key 1 kept for reading.
        let rotated = Keyring::new(Some(key(2)), vec![key(1)]);
        assert_eq!(
            rotated
                .unwrap_key(&w)
                .unwrap()
                .open(b"", &sealed, "x")
                .unwrap(),
            b"old data"
        );
        assert_ne!(
            rotated.new_data_key().unwrap().unwrap().1.master_key_id,
            w.master_key_id
        );
        // Key 1 dropped: the error names it.
        let e = Keyring::new(Some(key(2)), vec![])
            .unwrap_key(&w)
            .unwrap_err();
        assert!(e.to_string().contains(&w.master_key_id), "{e}");
        assert!(matches!(e, SealError::MissingKey(_)));
        let e = Keyring::default().unwrap_key(&w).unwrap_err();
        assert!(matches!(e, SealError::NoKeys(_)), "{e}");
        // A wrapped key whose blob was altered is refused, not used.
        let mut bad = w.clone();
        bad.blob[20] ^= 0x40;
        assert!(matches!(old.unwrap_key(&bad), Err(SealError::Tampered(_))));
        // A key claiming another id does not unwrap under it.
        let mut moved = w.clone();
        moved.master_key_id = key(2).id().to_string();
        assert!(rotated.unwrap_key(&moved).is_err());
    }

    #[test]
    fn key_text_forms() {
        let t = MasterKey::generate_text().unwrap();
        let a = MasterKey::parse(&format!("  {t}\n")).unwrap();
        assert!(a.id().starts_with("mk-") && a.id().len() == 19);
        let hexed = MasterKey::parse(&"ab".repeat(32)).unwrap();
        assert_eq!(hexed.id(), MasterKey::from_bytes(&[0xab; 32]).unwrap().id());
        for bad in ["", "short", &"ab".repeat(31), "!!!!", &"a".repeat(200)] {
            assert!(
                matches!(MasterKey::parse(bad), Err(SealError::InvalidKey(_))),
                "{bad}"
            );
        }
        let w = Keyring::new(Some(a), vec![])
            .new_data_key()
            .unwrap()
            .unwrap()
            .1;
        assert_eq!(WrappedKey::from_text(&w.to_text()), Some(w));
        assert_eq!(WrappedKey::from_text("mk-1:AAAA"), None);
        assert_eq!(WrappedKey::from_text("nocolon"), None);
    }

    #[test]
    fn no_active_key_means_no_encryption() {
        let r = Keyring::new(None, vec![key(3)]);
        assert!(!r.encrypts());
        assert!(r.new_data_key().unwrap().is_none());
        assert_eq!(r.ids().count(), 1);
    }
}
