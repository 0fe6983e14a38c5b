//! Tamper evidence for what delivery writes.
//!
//! Each delivery destination that writes a bucket keeps a log: every line it writes (an
//! invocation record, a CloudTrail event), in journal order, is a leaf of an append-only
//! RFC 6962 Merkle tree ([`merkle`]). At least every few minutes, also when idle, and at
//! shutdown, it writes a [`checkpoint::Checkpoint`] to the same bucket: tree size, root
//! hash, time, the objects delivered since the last one with their SHA-256 and leaves,
//! signed with Ed25519 ([`keys`]). [`log::Notary`] is that state, without I/O.
//! [`verify`] checks a bucket offline with only the public keys, and builds and checks
//! inclusion and consistency proofs.

pub mod checkpoint;
pub mod keys;
pub mod log;
pub mod merkle;
pub mod verify;

pub use checkpoint::Checkpoint;
pub use keys::{PublicKey, SigningKey};
pub use log::Notary;

/// Errors.
#[derive(Debug, thiserror::Error)]
pub enum NotaryError {
    /// A key file is unusable.
    #[error("key: {0}")]
    Key(String),
    /// A checkpoint or proof is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The stored state of a log is unusable.
    #[error("integrity state: {0}")]
    State(String),
    /// Reading the bucket failed.
    #[error("bucket: {0}")]
    Bucket(String),
}
