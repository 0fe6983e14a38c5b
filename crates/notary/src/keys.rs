//! Ed25519 keys (with `ring`, already in the build through rustls): the signing key as a
//! PKCS#8 PEM file (what `openssl genpkey -algorithm ed25519` writes), the public key as an
//! SPKI PEM file (`openssl pkey -pubout`), and key ids.

use crate::NotaryError;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

fn pem(label: &str, der: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn unpem(text: &str, label: &str) -> Result<Vec<u8>, NotaryError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| NotaryError::Key(format!("not a PEM {label} (no `{begin}` line)")))?;
    let rest = &text[start + begin.len()..];
    let stop = rest
        .find(&end)
        .ok_or_else(|| NotaryError::Key(format!("PEM {label} without its `{end}` line")))?;
    let b64: String = rest[..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| NotaryError::Key(format!("PEM {label}: bad base64: {e}")))
}

/// A key id: the first 8 bytes of SHA-256 over the raw public key, in hex.
pub fn key_id(public: &[u8]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

/// The key that signs checkpoints.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.id)
    }
}

impl SigningKey {
    /// A new random key, as PKCS#8 PEM text.
    pub fn generate_pem() -> Result<String, NotaryError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| NotaryError::Key("could not generate an Ed25519 key".into()))?;
        Ok(pem("PRIVATE KEY", doc.as_ref()))
    }

    /// A key from PKCS#8 PEM text.
    pub fn from_pem(text: &str) -> Result<Self, NotaryError> {
        let der = unpem(text, "PRIVATE KEY")?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|e| NotaryError::Key(format!("not an Ed25519 PKCS#8 private key: {e}")))?;
        let id = key_id(pair.public_key().as_ref());
        Ok(SigningKey { pair, id })
    }

    /// Its key id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public key, as SPKI PEM text.
    pub fn public_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.pair.public_key().as_ref());
        pem("PUBLIC KEY", &der)
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            raw: self.pair.public_key().as_ref().to_vec(),
            id: self.id.clone(),
        }
    }

    /// Sign `msg`.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(msg).as_ref().to_vec()
    }
}

/// A key that verifies checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    raw: Vec<u8>,
    id: String,
}

impl PublicKey {
    /// A public key from SPKI PEM text.
    pub fn from_pem(text: &str) -> Result<Self, NotaryError> {
        if text.contains("PRIVATE KEY-----") {
            return Err(NotaryError::Key(
                "this is a private key; give the public key (logbook keys public, or openssl pkey -pubout)"
                    .into(),
            ));
        }
        let der = unpem(text, "PUBLIC KEY")?;
        let raw = der
            .strip_prefix(&SPKI_PREFIX[..])
            .filter(|k| k.len() == 32)
            .ok_or_else(|| NotaryError::Key("not an Ed25519 public key (SPKI)".into()))?
            .to_vec();
        let id = key_id(&raw);
        Ok(PublicKey { raw, id })
    }

    /// Its key id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Is `sig` this key's signature of `msg`?
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.raw)
            .verify(msg, sig)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_pem_and_sign() {
        let pem = SigningKey::generate_pem().unwrap();
        let k = SigningKey::from_pem(&pem).unwrap();
        let p = PublicKey::from_pem(&k.public_pem()).unwrap();
        assert_eq!(p.id(), k.id());
        let sig = k.sign(b"hello");
        assert!(p.verify(b"hello", &sig));
        assert!(!p.verify(b"hellp", &sig));
        let other = SigningKey::from_pem(&SigningKey::generate_pem().unwrap()).unwrap();
        assert!(!other.public().verify(b"hello", &sig));
        assert_ne!(other.id(), k.id());
    }

    #[test]
    fn bad_key_files_get_precise_errors() {
        let e = |r: Result<PublicKey, NotaryError>| r.unwrap_err().to_string();
        assert!(e(PublicKey::from_pem("hello")).contains("not a PEM PUBLIC KEY"));
        let private = SigningKey::generate_pem().unwrap();
        assert!(e(PublicKey::from_pem(&private)).contains("private key"));
        let truncated = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n";
        assert!(e(PublicKey::from_pem(truncated)).contains("not an Ed25519 public key"));
        assert!(
            SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----")
                .unwrap_err()
                .to_string()
                .contains("bad base64")
        );
        // An OpenSSL-generated key (openssl genpkey -algorithm ed25519) is accepted.
        let openssl = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIM3hiV4wq/SeNnqetnIAVQksmX9Ho01AEv0OcqlcE64p\n-----END PRIVATE KEY-----\n";
        let k = SigningKey::from_pem(openssl).unwrap();
        assert!(k.public().verify(b"x", &k.sign(b"x")));
    }
}
