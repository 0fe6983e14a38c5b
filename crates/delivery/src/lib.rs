//! Delivery from the journal to destinations.
//!
//! [`archive::Archive`] delivers invocation records to an object store in Bedrock's S3 key
//! layout as gzipped JSON Lines. Each destination keeps its own durable cursor in the
//! journal and only advances it after the objects holding the records are stored, so a
//! crash re-delivers; object keys are derived from the journal range they hold, so
//! re-delivery overwrites rather than duplicates.

pub mod archive;

/// Delivery errors.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] logbook_journal::JournalError),
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// Local I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A background task failed.
    #[error("task: {0}")]
    Task(String),
}
