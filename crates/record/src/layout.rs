//! Bedrock's S3 key layout for invocation logs (reference §2.1), as pure functions.
//!
//! ```text
//! <keyPrefix>/AWSLogs/<accountId>/BedrockModelInvocationLogs/<region>/YYYY/MM/DD/HH/<YYYYMMDD>T<HHMMSSmmm>Z_<16 hex>.json.gz
//! <keyPrefix>/AWSLogs/<accountId>/BedrockModelInvocationLogs/<region>/YYYY/MM/DD/HH/data/<requestId>_input.json.gz
//! ```
//!
//! The `<16 hex>` part is derived from the node id and the first journal sequence number
//! of the object, and the time part from that entry's journal time, so that delivering
//! the same journal range twice (after a crash) overwrites the same object instead of
//! adding a duplicate.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// Normalise a `keyPrefix`: no leading or trailing `/`, no empty segments.
/// `""` stays empty; `"invocation-logs/"` becomes `"invocation-logs"`.
pub fn normalize_prefix(prefix: &str) -> String {
    prefix
        .split('/')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

fn join_prefix(prefix: &str, rest: &str) -> String {
    let p = normalize_prefix(prefix);
    if p.is_empty() {
        rest.to_string()
    } else {
        format!("{p}/{rest}")
    }
}

/// The folder of one hour: `<prefix>/AWSLogs/<acct>/BedrockModelInvocationLogs/<region>/YYYY/MM/DD/HH`.
pub fn hour_folder(prefix: &str, account: &str, region: &str, t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    join_prefix(
        prefix,
        &format!(
            "AWSLogs/{account}/BedrockModelInvocationLogs/{region}/{:04}/{:02}/{:02}/{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour()
        ),
    )
}

/// The 16 lowercase hex characters that make an object name unique and deterministic.
pub fn object_discriminator(node_id: &str, first_sequence: u64) -> String {
    let mut h = Sha256::new();
    h.update(node_id.as_bytes());
    h.update(b":");
    h.update(first_sequence.to_be_bytes());
    hex::encode(&h.finalize()[..8])
}

/// Key of a batch object of records.
pub fn log_object_key(
    prefix: &str,
    account: &str,
    region: &str,
    t: OffsetDateTime,
    node_id: &str,
    first_sequence: u64,
) -> String {
    let u = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{}/{:04}{:02}{:02}T{:02}{:02}{:02}{:03}Z_{}.json.gz",
        hour_folder(prefix, account, region, t),
        u.year(),
        u8::from(u.month()),
        u.day(),
        u.hour(),
        u.minute(),
        u.second(),
        u.millisecond(),
        object_discriminator(node_id, first_sequence)
    )
}

/// Which side of the call an offloaded body belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodySide {
    /// The request body.
    Input,
    /// The response body.
    Output,
}

/// Key of an offloaded large body: `.../HH/data/<requestId>_input.json.gz`.
pub fn data_object_key(
    prefix: &str,
    account: &str,
    region: &str,
    t: OffsetDateTime,
    request_id: &str,
    side: BodySide,
) -> String {
    let side = match side {
        BodySide::Input => "input",
        BodySide::Output => "output",
    };
    format!(
        "{}/data/{request_id}_{side}.json.gz",
        hour_folder(prefix, account, region, t)
    )
}

/// `s3://bucket/key`
pub fn s3_uri(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn matches_the_real_example_shape() {
        // Real key (reference §2.1): us-east-1/AWSLogs/891377031307/BedrockModelInvocationLogs/
        // us-east-1/2024/11/20/16/20241120T164851056Z_9b86bf4994c4ab1c.json.gz
        let k = log_object_key(
            "us-east-1",
            "891377031307",
            "us-east-1",
            datetime!(2024-11-20 16:48:51.056 UTC),
            "node-a",
            7,
        );
        assert!(k.starts_with("us-east-1/AWSLogs/891377031307/BedrockModelInvocationLogs/us-east-1/2024/11/20/16/20241120T164851056Z_"), "{k}");
        assert!(k.ends_with(".json.gz"));
        let hex = &k[k.len() - 24..k.len() - 8];
        assert_eq!(hex.len(), 16);
        assert!(hex
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn no_prefix_starts_with_awslogs_and_prefix_is_normalised() {
        let t = datetime!(2025-01-09 18:00:00 UTC);
        assert!(log_object_key("", "1", "r", t, "n", 1).starts_with("AWSLogs/1/"));
        assert!(log_object_key("/a//b/", "1", "r", t, "n", 1).starts_with("a/b/AWSLogs/1/"));
    }

    #[test]
    fn discriminator_is_deterministic_and_distinct() {
        assert_eq!(object_discriminator("n", 5), object_discriminator("n", 5));
        assert_ne!(object_discriminator("n", 5), object_discriminator("n", 6));
        assert_ne!(object_discriminator("n", 5), object_discriminator("m", 5));
    }

    #[test]
    fn data_key() {
        let k = data_object_key(
            "p/",
            "123456789012",
            "us-east-1",
            datetime!(2026-04-03 20:03:49 UTC),
            "abc",
            BodySide::Input,
        );
        assert_eq!(
            k,
            "p/AWSLogs/123456789012/BedrockModelInvocationLogs/us-east-1/2026/04/03/20/data/abc_input.json.gz"
        );
    }
}
